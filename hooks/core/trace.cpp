// SPDX-License-Identifier: MIT
// trace.cpp: call-site attribution for MEMSAVE_TRACE=N, with libunwind. For every
// substituted node, walk the stack to the first frame outside LibTorch, c10, libmemsave and
// the C/C++ runtime, and add the tensor bytes stock's node would have kept (and ours did
// not) to that call site. The report lists the top N sites (shim/report.c).
//
// libunwind lives here, in the hooks, which are loaded only into processes that load
// LibTorch, so `LD_PRELOAD=libmemsave.so /bin/true` maps nothing more (tests/test_preload.sh).
//
// Note [Frame cache]: each return address is classified once (which module, whether it is
// ours, LibTorch's, the runtime's, the interpreter's or the host's, and for host frames the
// symbol) and kept in an open-addressing table that readers probe without a lock; writers
// insert under g_lock and publish the address last. A traced node then costs one unwind to
// the first host frame plus one table probe per frame (Note [Trace cost]).
//
// Note [Trace cost]: the tracer measures its own CPU time (CLOCK_THREAD_CPUTIME_ID, so the
// machine's load does not count) and the report prints it per node. On the development
// machine (2 shared cores, LibTorch 1.13, scripts/bench_trace.sh): about 1.2 us of CPU per
// substituted node once the frames are known, plus about 3.5 ms once per process for the
// first symbol lookups. memsave-demo with tiny convolutions (batch 1, 8x8, width 8, 1600
// nodes), the worst case we tried, spends about 56 us of CPU per node, so tracing costs it
// about 2-5 %; the default demo (24 nodes of milliseconds each) shows no measurable
// difference in whole-process CPU time.
//
// Note [Python attribution]: in a Python host the first frame outside LibTorch is the
// interpreter's, which says nothing about the Python line. There we attribute to the
// operator instead, whose name the kernel skeleton passes (op.operator_name(), e.g.
// "aten::mean.dim"), and the report says so.
//
// Note [Without libunwind]: libunwind is optional at build time (CMakeLists.txt,
// MEMSAVE_HAVE_LIBUNWIND). Without it trace_init says once that attribution is unavailable
// and leaves shared()->trace_table unset, so no node is ever traced and the report prints
// "trace: unavailable" (shim/report.c); everything else is the same.
#ifndef MEMSAVE_HAVE_LIBUNWIND
#define MEMSAVE_HAVE_LIBUNWIND 1
#endif

#include "internal.h"
#include "shared.h"

#if !MEMSAVE_HAVE_LIBUNWIND
namespace memsave {

void trace_init() {
  shared()->log(0, "warning: MEMSAVE_TRACE: call-site attribution is unavailable: the hooks were built without "
                   "libunwind");
}

void trace_substituted(const c10::OperatorName&, uint64_t) {}

}  // namespace memsave
#else
#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include <cxxabi.h>
#include <dlfcn.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace memsave {
namespace {

enum class Kind : int32_t { Skip = 1, Interpreter, Site };

struct Frame {
  std::atomic<uintptr_t> pc;  // 0 = empty; stored last (release)
  Kind kind;
  int32_t index;  // Site: into g_table.sites, -1 when the table is full
};

constexpr size_t kCacheBits = 14, kCacheSlots = size_t{1} << kCacheBits, kProbes = 64;
constexpr int kMaxDepth = 256, kMaxOps = 64;

struct Op {
  const c10::OperatorName* key;  // the dispatcher's entry, which outlives every call
  int32_t site;                  // its site, named "aten::mean.dim"
};

// Plain data with static storage: the report reads g_table at exit, after every C++
// destructor has run.
Frame g_cache[kCacheSlots];
Op g_ops[kMaxOps];
int g_nops;
memsave_trace g_table;
// The mangled names of the sites, demangled into g_table at exit.
constexpr uint64_t kNoOffset = ~uint64_t{0};
struct SiteName {
  char mangled[1024];
  uint64_t offset;
};
SiteName g_site_names[MEMSAVE_MAX_SITES];
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

size_t slot_of(uintptr_t pc) { return static_cast<size_t>((pc * 0x9E3779B97F4A7C15ull) >> (64 - kCacheBits)); }

const Frame* lookup(uintptr_t pc) {
  for (size_t i = 0, s = slot_of(pc); i < kProbes; i++, s = (s + 1) & (kCacheSlots - 1)) {
    uintptr_t p = g_cache[s].pc.load(std::memory_order_acquire);
    if (p == pc) return &g_cache[s];
    if (p == 0) return nullptr;
  }
  return nullptr;
}

// Called with g_lock held. A full neighbourhood (never seen: 64 probes in 16384 slots) only
// means that this address is classified again next time.
void insert(uintptr_t pc, Kind kind, int32_t index) {
  for (size_t i = 0, s = slot_of(pc); i < kProbes; i++, s = (s + 1) & (kCacheSlots - 1)) {
    uintptr_t p = g_cache[s].pc.load(std::memory_order_relaxed);
    if (p == pc) return;
    if (p != 0) continue;
    g_cache[s].kind = kind;
    g_cache[s].index = index;
    g_cache[s].pc.store(pc, std::memory_order_release);
    return;
  }
}

bool starts_with(const char* s, const char* prefix) { return std::strncmp(s, prefix, std::strlen(prefix)) == 0; }

// Modules whose frames are never a call site: LibTorch (and its Python binding), the C and
// C++ runtime and the unwinder. Ours are handled separately.
bool library_module(const char* path, const char* base) {
  static const char* const prefixes[] = {"libtorch", "libc10", "libcaffe2", "libshm", "libgomp", "libc.so",
                                         "libc-", "libstdc++", "libgcc_s", "ld-linux", "libpthread", "libdl",
                                         "libm.so", "libm-", "libunwind"};
  for (const char* p : prefixes)
    if (starts_with(base, p)) return true;
  return starts_with(base, "_C.") && std::strstr(path, "/torch/") != nullptr;  // torch/_C.cpython-*.so
}

bool interpreter_module(const char* base) { return starts_with(base, "python") || starts_with(base, "libpython"); }

// The names of a mangled symbol's scope, in order: "at", "native", "conv" for
// _ZN2at6native4conv...; `fn` is called with each and stops the walk by returning true.
template <class Fn>
bool any_scope_name(const char* mangled, Fn&& fn) {
  if (!starts_with(mangled, "_Z")) return false;
  const char* p = mangled + 2;
  const bool nested = *p == 'N';
  if (nested) p++;
  while (*p == 'K' || *p == 'V' || *p == 'r') p++;
  if (p[0] == 'S' && p[1] == 't') return fn("std", size_t{3});
  do {
    char* end;
    const long len = std::strtol(p, &end, 10);
    if (end == p || len <= 0 || std::strlen(end) < static_cast<size_t>(len)) return false;
    if (fn(end, static_cast<size_t>(len))) return true;
    p = end + len;
  } while (nested && std::isdigit(static_cast<unsigned char>(*p)));
  return false;
}

// Code from LibTorch's and the standard library's headers, instantiated inside the host
// (at::conv2d, torch::nn::Sequential::forward, std::function): not a call site.
bool header_code(const char* mangled) {
  static const char* const scopes[] = {"std", "at", "c10", "torch", "caffe2", "__gnu_cxx", "__cxxabiv1"};
  return any_scope_name(mangled, [](const char* name, size_t len) {
    for (const char* s : scopes)
      if (len == std::strlen(s) && std::strncmp(name, s, len) == 0) return true;
    return false;
  });
}

// The mangled name and offset of the frame whose return address is `pc`; false without a
// symbol. Walks a cursor from here to that frame: slow, but done once per address. Names are
// demangled only at exit (demangle_sites): __cxa_demangle's allocations, made while the host
// runs, were seen to change glibc's adaptive mmap threshold and double the host's page
// faults (memsave-demo: 58 thousand minor faults without, 128 thousand with).
bool symbolize(uintptr_t pc, char* mangled, size_t cap, uint64_t* offset) {
  unw_context_t context;
  unw_cursor_t cursor;
  if (unw_getcontext(&context) != 0 || unw_init_local(&cursor, &context) != 0) return false;
  unw_word_t ip = 0, off = 0;
  for (int i = 0; i < kMaxDepth && unw_step(&cursor) > 0; i++)
    if (unw_get_reg(&cursor, UNW_REG_IP, &ip) == 0 && ip == pc) break;
  if (ip != pc) return false;
  mangled[0] = '\0';
  if (unw_get_proc_name(&cursor, mangled, cap, &off) != 0 && mangled[0] == '\0') return false;
  *offset = off;
  return true;
}

// Called with g_lock held. `symbol` is a mangled name (shown demangled, demangle_sites), an
// operator name or an address; `symbol_offset` is added as "+0x..." unless it is ~0.
int32_t new_site(const char* symbol, uint64_t symbol_offset, const char* module, uint64_t module_offset) {
  if (g_table.nsites >= MEMSAVE_MAX_SITES) return -1;
  const int32_t i = g_table.nsites;
  memsave_site& s = g_table.sites[i];
  std::snprintf(g_site_names[i].mangled, sizeof g_site_names[i].mangled, "%s", symbol);
  g_site_names[i].offset = symbol_offset;
  std::snprintf(s.symbol, sizeof s.symbol, "%s", symbol);
  if (symbol_offset != kNoOffset) {
    const size_t n = std::strlen(s.symbol);
    std::snprintf(s.symbol + n, sizeof s.symbol - n, "+0x%llx", static_cast<unsigned long long>(symbol_offset));
  }
  std::snprintf(s.module, sizeof s.module, "%s", module);
  s.module_offset = module_offset;
  return g_table.nsites++;
}

// Called by the report at exit, before it reads the sites: their names demangled,
// "function(args)+0x1f" (see symbolize). Not an exit handler of our own: registering one
// allocates in the host too, with the same effect on glibc's heap.
void demangle_sites() {
  for (int i = 0; i < g_table.nsites; i++) {
    int status = -1;
    char* demangled = abi::__cxa_demangle(g_site_names[i].mangled, nullptr, nullptr, &status);
    if (status == 0 && demangled) {
      memsave_site& s = g_table.sites[i];
      std::snprintf(s.symbol, sizeof s.symbol, "%s+0x%llx", demangled,
                    static_cast<unsigned long long>(g_site_names[i].offset));
    }
    std::free(demangled);
  }
}


// Classifies a return address seen for the first time (Note [Frame cache]).
void classify(uintptr_t pc, Kind* kind, int32_t* index) {
  Dl_info info{};
  const bool found = dladdr(reinterpret_cast<void*>(pc - 1), &info) != 0;  // pc - 1: inside the call
  char exe[512] = "";
  const char* path = found && info.dli_fname ? info.dli_fname : "";
  if (!*path) {  // the main program has no name in the link map
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = '\0';
    path = exe;
  }
  const char* slash = std::strrchr(path, '/');
  const char* base = slash ? slash + 1 : path;
  const uint64_t offset = found ? pc - 1 - reinterpret_cast<uintptr_t>(info.dli_fbase) : pc - 1;

  char mangled[1024] = "";
  uint64_t symbol_offset = kNoOffset;
  Kind k = Kind::Skip;
  if (starts_with(base, "libmemsave") || library_module(path, base)) {
    k = Kind::Skip;
  } else if (interpreter_module(base)) {
    k = Kind::Interpreter;
  } else {
    const bool named = symbolize(pc, mangled, sizeof mangled, &symbol_offset);
    if (!named || !header_code(mangled)) {
      k = Kind::Site;
      if (!named) {
        std::snprintf(mangled, sizeof mangled, "0x%llx", static_cast<unsigned long long>(offset));
        symbol_offset = kNoOffset;
      }
    }
  }
  // Only the tables are touched under the lock; unwinding and symbol lookup are done above,
  // so that the lock is never held while libunwind or the loader takes its own.
  int32_t i = -1;
  pthread_mutex_lock(&g_lock);
  if (const Frame* f = lookup(pc)) {  // another thread classified it meanwhile
    k = f->kind;
    i = f->index;
  } else {
    if (k == Kind::Site) i = new_site(mangled, symbol_offset, base, offset);
    insert(pc, k, i);
  }
  pthread_mutex_unlock(&g_lock);
  *kind = k;
  *index = i;
}

// The site of an operator, for Python hosts (Note [Python attribution]).
// The operator's name is formatted once, when its site is made.
int32_t operator_site(const c10::OperatorName& op) {
  pthread_mutex_lock(&g_lock);
  g_table.operator_names = 1;
  int32_t result = -1;
  int i = 0;
  while (i < g_nops && g_ops[i].key != &op) i++;
  if (i < g_nops) {
    result = g_ops[i].site;
  } else if (g_nops < kMaxOps) {
    result = new_site(c10::toString(op).c_str(), kNoOffset, "", 0);
    g_ops[g_nops++] = Op{&op, result};
  }
  pthread_mutex_unlock(&g_lock);
  return result;
}

// CPU time of this thread: the cost of tracing, not the machine's load (Note [Trace cost]).
uint64_t cpu_ns() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<uint64_t>(t.tv_sec) * 1000000000ull + static_cast<uint64_t>(t.tv_nsec);
}

}  // namespace

void trace_init() {
  // Per-thread caching of unwind information: later walks of the same frames are cheap.
  unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
  shared()->trace_table = &g_table;
  g_table.finish = demangle_sites;
}

void trace_substituted(const c10::OperatorName& op, uint64_t bytes) {
  const uint64_t start = cpu_ns();
  // unw_backtrace takes libunwind's fast path (a per-thread cache of frame layouts keyed by
  // address); a cursor is made only to symbolize an address seen for the first time.
  void* pcs[kMaxDepth];
  const int depth = unw_backtrace(pcs, kMaxDepth);
  int32_t site = -1;
  int frames = 0;
  bool attributed = false;
  for (int i = 1; i < depth && !attributed; i++) {  // pcs[0] is this function
    const uintptr_t ip = reinterpret_cast<uintptr_t>(pcs[i]);
    if (ip == 0) break;
    frames++;
    Kind kind;
    int32_t index;
    if (const Frame* f = lookup(ip)) {
      kind = f->kind;
      index = f->index;
    } else {
      classify(ip, &kind, &index);
    }
    switch (kind) {
      case Kind::Skip:
        break;
      case Kind::Interpreter:
        site = operator_site(op);
        attributed = true;
        break;
      case Kind::Site:
        site = index;
        attributed = true;
        break;
    }
  }
  if (site >= 0) {
    __atomic_fetch_add(&g_table.sites[site].bytes, bytes, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_table.sites[site].nodes, 1, __ATOMIC_RELAXED);
  } else {
    __atomic_fetch_add(&g_table.unattributed_bytes, bytes, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_table.unattributed_nodes, 1, __ATOMIC_RELAXED);
  }
  __atomic_fetch_add(&g_table.nodes, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&g_table.frames, static_cast<uint64_t>(frames), __ATOMIC_RELAXED);
  __atomic_fetch_add(&g_table.ns, cpu_ns() - start, __ATOMIC_RELAXED);
}

}  // namespace memsave
#endif  // MEMSAVE_HAVE_LIBUNWIND
