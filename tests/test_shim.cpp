// SPDX-License-Identifier: MIT
// test_shim: the shim's core without preload and without LibTorch: option parsing, the
// warnings for bad values, the stats ABI, the error names, the family table and the report.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

extern "C" {
#include "internal.h"
}

namespace {

std::string read_with_env(const char* name, const char* value) {
  setenv(name, value, 1);
  testing::internal::CaptureStderr();
  memsave__options_read();
  memsave__options_flush();
  std::string err = testing::internal::GetCapturedStderr();
  unsetenv(name);
  return err;
}

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

TEST(Options, BoolGrammar) {
  int v = -1;
  for (const char* on : {"1", "on", "YES", "True"}) {
    EXPECT_TRUE(memsave__parse_bool(on, &v)) << on;
    EXPECT_EQ(v, 1) << on;
  }
  for (const char* off : {"0", "off", "No", "FALSE"}) {
    EXPECT_TRUE(memsave__parse_bool(off, &v)) << off;
    EXPECT_EQ(v, 0) << off;
  }
  EXPECT_FALSE(memsave__parse_bool("2", &v));
  EXPECT_FALSE(memsave__parse_bool("", &v));
}

unsigned ops(const char* list) {
  unsigned mask = 0xdead;
  EXPECT_TRUE(memsave__parse_ops(list, &mask)) << list;
  return mask;
}

TEST(Options, OpsList) {
  EXPECT_EQ(ops("conv"), 1u << MEMSAVE_FAMILY_CONV);
  EXPECT_EQ(ops("conv, relu"), (1u << MEMSAVE_FAMILY_CONV) | (1u << MEMSAVE_FAMILY_RELU));
  EXPECT_EQ(ops("all"), (1u << MEMSAVE_FAMILY_COUNT) - 1);
  EXPECT_EQ(ops("all,-linear"), ((1u << MEMSAVE_FAMILY_COUNT) - 1) & ~(1u << MEMSAVE_FAMILY_LINEAR));
  EXPECT_EQ(ops("none"), 0u);
  // A list that starts with an exclusion starts from the default set.
  EXPECT_EQ(ops("-dropout"), MEMSAVE_FAMILY_DEFAULT_MASK & ~(1u << MEMSAVE_FAMILY_DROPOUT));
  unsigned mask = 7;
  EXPECT_FALSE(memsave__parse_ops("conv,bogus", &mask));
  EXPECT_EQ(mask, 7u) << "a bad list leaves the value alone";
}

// Issue 11: one family table; its enum values are ABI.
TEST(Families, TableIsTheAbi) {
  EXPECT_EQ(MEMSAVE_FAMILY_CONV, 0);
  EXPECT_EQ(MEMSAVE_FAMILY_DROPOUT, 5);
  EXPECT_EQ(MEMSAVE_FAMILY_RECIPE, 6);
  EXPECT_EQ(MEMSAVE_FAMILY_COUNT, 7);
  EXPECT_EQ(MEMSAVE_FAMILY_SLOTS, 8);
  const char* names[] = {"conv", "linear", "batchnorm", "relu", "pool", "dropout", "recipe"};
  char buf[128];
  for (int f = 0; f < MEMSAVE_FAMILY_COUNT; f++) {
    EXPECT_STREQ(memsave_family_name(f), names[f]);
    EXPECT_EQ(ops(names[f]), 1u << f) << "MEMSAVE_OPS knows every family of the table";
  }
  EXPECT_STREQ(memsave__ops_string(MEMSAVE_FAMILY_DEFAULT_MASK, buf, sizeof buf), "conv,batchnorm,relu,pool,dropout,recipe");
  EXPECT_STREQ(MEMSAVE_OPS_ACCEPTED, "a comma list of conv, linear, batchnorm, relu, pool, dropout, recipe, all, none, -name");
}

TEST(Options, DefaultsWithoutEnvironment) {
  for (const char* name : {"MEMSAVE", "MEMSAVE_OPS", "MEMSAVE_VERBOSE", "MEMSAVE_TRACE", "MEMSAVE_REPORT"}) unsetenv(name);
  memsave__options_read();
  const struct memsave_options& o = memsave__shared.opts;
  EXPECT_EQ(o.enable, 1);
  EXPECT_EQ(o.ops_mask, MEMSAVE_FAMILY_DEFAULT_MASK);
  EXPECT_FALSE(o.ops_mask & (1u << MEMSAVE_FAMILY_LINEAR)) << "linear is off by default";
  EXPECT_EQ(o.verbose, 0);
  EXPECT_EQ(o.trace, 0);
  EXPECT_STREQ(o.report, "");
}

// Issue 11: docs/options.md's table is the option table, printed.
TEST(Options, DocsTableIsTheTable) {
  char* text = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&text, &len);
  memsave__options_markdown(f);
  fclose(f);
  std::string table(text, len);
  free(text);
  std::ifstream doc(MEMSAVE_SOURCE_DIR "/docs/options.md");
  std::stringstream page;
  page << doc.rdbuf();
  EXPECT_NE(page.str().find(table), std::string::npos) << "docs/options.md should contain:\n" << table;
}

TEST(Options, BadValuesWarnOnceAndKeepDefault) {
  struct Case {
    const char *name, *value;
  } cases[] = {{"MEMSAVE", "maybe"}, {"MEMSAVE_OPS", "conv,warp"}, {"MEMSAVE_VERBOSE", "7"}, {"MEMSAVE_TRACE", "-3"},
               {"MEMSAVE_POISON", "sometimes"}};
  for (const Case& c : cases) {
    std::string err = read_with_env(c.name, c.value);
    EXPECT_EQ(count_lines(err), 1) << err;
    EXPECT_NE(err.find("memsave: warning: "), std::string::npos) << err;
    EXPECT_NE(err.find(std::string(c.name) + "=\"" + c.value + "\""), std::string::npos) << err;
    EXPECT_NE(err.find("accepted"), std::string::npos) << err;
  }
  EXPECT_EQ(memsave__shared.opts.enable, 1);
  EXPECT_EQ(memsave__shared.opts.verbose, 0);
  EXPECT_EQ(memsave__shared.opts.trace, 0);
  EXPECT_EQ(memsave__shared.opts.poison, MEMSAVE_POISON_OFF);
}

TEST(Options, TooLongPathWarnsOnce) {
  std::string err = read_with_env("MEMSAVE_REPORT", std::string(5000, 'x').c_str());
  EXPECT_EQ(count_lines(err), 1) << err;
  EXPECT_STREQ(memsave__shared.opts.report, "");
}

TEST(Options, GoodValuesAreSilent) {
  EXPECT_EQ(read_with_env("MEMSAVE", "off"), "");
  EXPECT_EQ(memsave__shared.opts.enable, 0);
  EXPECT_EQ(read_with_env("MEMSAVE_OPS", "conv,-conv,relu"), "");
  EXPECT_EQ(memsave__shared.opts.ops_mask, 1u << MEMSAVE_FAMILY_RELU);
  EXPECT_EQ(read_with_env("MEMSAVE_TRACE", "12"), "");
  EXPECT_EQ(memsave__shared.opts.trace, 12);
  // Issue 23: 1 means NaN; the other patterns by name, in any case.
  for (const auto& [v, want] : std::vector<std::pair<const char*, int>>{
           {"1", MEMSAVE_POISON_NAN}, {"ON", MEMSAVE_POISON_NAN}, {"nan", MEMSAVE_POISON_NAN},
           {"Max", MEMSAVE_POISON_MAX}, {"off", MEMSAVE_POISON_OFF}, {"0", MEMSAVE_POISON_OFF}}) {
    EXPECT_EQ(read_with_env("MEMSAVE_POISON", v), "") << v;
    EXPECT_EQ(memsave__shared.opts.poison, want) << v;
  }
}

TEST(Abi, StatsAreSizeVersioned) {
  struct memsave_stats st;
  EXPECT_EQ(memsave_get_stats(nullptr, sizeof st), MEMSAVE_EINVAL);
  EXPECT_EQ(memsave_get_stats(&st, 4), MEMSAVE_EINVAL);
  __atomic_store_n(&memsave__shared.substituted[MEMSAVE_FAMILY_CONV], 5, __ATOMIC_RELAXED);
  // An older caller that knows only the first fields gets only those.
  unsigned char buf[sizeof st + 16];
  memset(buf, 0xab, sizeof buf);
  size_t prefix = offsetof(struct memsave_stats, fallbacks);
  ASSERT_EQ(memsave_get_stats(reinterpret_cast<struct memsave_stats*>(buf), prefix), 0);
  EXPECT_EQ(reinterpret_cast<struct memsave_stats*>(buf)->size, prefix);
  EXPECT_EQ(reinterpret_cast<struct memsave_stats*>(buf)->substituted[MEMSAVE_FAMILY_CONV], 5u);
  EXPECT_EQ(buf[prefix], 0xab) << "wrote past the size the caller gave";
  ASSERT_EQ(memsave_get_stats(&st, sizeof st), 0);
  EXPECT_EQ(st.size, sizeof st);
}

// Issue 11: the fields added at the end do not move the old ones; a caller built before them
// (its struct ended at cpu_peak_total_bytes) gets its prefix and nothing more.
TEST(Abi, OldSizeCallerGetsItsPrefix) {
  const size_t old_size = offsetof(struct memsave_stats, cpu_peak_total_bytes) + sizeof(uint64_t);
  EXPECT_EQ(old_size, 8u + 3 * 8 * MEMSAVE_FAMILY_SLOTS + 5 * 8) << "the layout of 0.1's fields";
  EXPECT_EQ(offsetof(struct memsave_stats, activation_bytes_kept), old_size);
  memsave__shared.kept = {100, 30};
  memsave__shared.stock = {400, 30};
  unsigned char buf[sizeof(struct memsave_stats) + 16];
  memset(buf, 0xab, sizeof buf);
  auto* st = reinterpret_cast<struct memsave_stats*>(buf);
  ASSERT_EQ(memsave_get_stats(st, old_size), 0);
  EXPECT_EQ(st->size, old_size);
  EXPECT_EQ(st->bytes_kept, 130u) << "activations + parameters";
  EXPECT_EQ(st->bytes_stock, 430u);
  EXPECT_EQ(buf[old_size], 0xab) << "wrote past the size the caller gave";
  ASSERT_EQ(memsave_get_stats(st, sizeof(struct memsave_stats)), 0);
  EXPECT_EQ(st->activation_bytes_kept, 100u);
  EXPECT_EQ(st->activation_bytes_stock, 400u);
  EXPECT_EQ(st->parameter_bytes_kept, 30u);
  EXPECT_EQ(st->parameter_bytes_stock, 30u);
  memsave__shared.kept = memsave__shared.stock = {0, 0};
}

TEST(Abi, PeakResetsToCurrent) {
  __atomic_store_n(&memsave__shared.cpu_current_bytes, 100, __ATOMIC_RELAXED);
  __atomic_store_n(&memsave__shared.cpu_peak_bytes, 900, __ATOMIC_RELAXED);
  memsave_reset_peak();
  struct memsave_stats st;
  memsave_get_stats(&st, sizeof st);
  EXPECT_EQ(st.cpu_peak_bytes, 100u);
  EXPECT_GE(st.cpu_peak_total_bytes, 900u) << "the whole run's peak survives the reset";
  // A later, higher peak is the whole run's; a lower one is not.
  __atomic_store_n(&memsave__shared.cpu_peak_bytes, 1500, __ATOMIC_RELAXED);
  memsave_get_stats(&st, sizeof st);
  EXPECT_EQ(st.cpu_peak_total_bytes, 1500u);
  memsave_reset_peak();
  __atomic_store_n(&memsave__shared.cpu_peak_bytes, 200, __ATOMIC_RELAXED);
  memsave_get_stats(&st, sizeof st);
  EXPECT_EQ(st.cpu_peak_bytes, 200u);
  EXPECT_EQ(st.cpu_peak_total_bytes, 1500u);
}

TEST(Abi, SetEnabledReturnsPrevious) {
  memsave_set_enabled(1);
  EXPECT_EQ(memsave_set_enabled(0), 1);
  EXPECT_EQ(memsave_enabled(), 0);
  EXPECT_EQ(memsave_set_enabled(5), 0);
  EXPECT_EQ(memsave_enabled(), 1);
}

TEST(Abi, ErrorNames) {
  EXPECT_STREQ(memsave_err_name(MEMSAVE_EINVAL), "MEMSAVE_EINVAL");
  EXPECT_STREQ(memsave_err_name(0), "MEMSAVE_OK");
  EXPECT_STREQ(memsave_strerror(MEMSAVE_ENOTORCH), "LibTorch is not loaded in this process");
  EXPECT_STREQ(memsave_family_name(MEMSAVE_FAMILY_POOL), "pool");
  EXPECT_EQ(memsave_family_name(MEMSAVE_FAMILY_COUNT), nullptr);
  EXPECT_STREQ(memsave_version(), "0.1.0");
}

TEST(Fallbacks, ReasonsAreCountedOnce) {
  int before = memsave__nreasons;
  memsave__note_fallback(MEMSAVE_FAMILY_CONV, "test reason");
  memsave__note_fallback(MEMSAVE_FAMILY_CONV, "test reason");
  EXPECT_EQ(memsave__nreasons, before + 1);
  EXPECT_EQ(memsave__reasons[before].count, 2u);
}

// --- The report (issue 11) ----------------------------------------------------------------

// Sets the shared state of a process whose hooks are active with every family on, and
// clears the counters.
void fresh_state() {
  memsave__options_read();
  struct memsave_shared& s = memsave__shared;
  s.opts.ops_mask = (1u << MEMSAVE_FAMILY_COUNT) - 1;
  s.active = 1;
  s.families_unavailable = 0;
  s.families_registered = s.opts.ops_mask;
  memset(s.substituted, 0, sizeof s.substituted);
  memset(s.passthrough, 0, sizeof s.passthrough);
  memset(s.fallbacks, 0, sizeof s.fallbacks);
  s.kept = s.stock = {0, 0};
  s.recomputed = 0;
  s.kept_live = s.stock_live = s.kept_live_peak = s.stock_live_peak = 0;
}

// The report written to a temporary file (.txt or .json), and what the shim said on stderr.
struct Written {
  int rc;
  std::string text, err;
};

Written write_report(const char* suffix) {
  std::string path = testing::TempDir() + "memsave-report-" + std::to_string(getpid()) + suffix;
  testing::internal::CaptureStderr();
  int rc = memsave__report_write_to(path.c_str(), 1);
  std::string err = testing::internal::GetCapturedStderr();
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  unlink(path.c_str());
  return {rc, text.str(), err};
}

// A 1-element dropout keeps a 4-byte value and a 1-byte mask against stock's 4-byte noise:
// the saving is negative and must not wrap to 16 EiB.
TEST(Report, NegativeSavingDoesNotWrap) {
  fresh_state();
  memsave__shared.substituted[MEMSAVE_FAMILY_DROPOUT] = 1;
  memsave__shared.kept.activations = 5;
  memsave__shared.stock.activations = 4;
  memsave__shared.kept_live_peak = 5;
  memsave__shared.stock_live_peak = 4;
  Written w = write_report(".txt");
  EXPECT_NE(w.text.find("activations at most 5 B at once (stock would keep at most 4 B, 1 B more); "
                        "summed over the run: activations 5 B (stock 4 B, 1 B more)"),
            std::string::npos)
      << w.text;
  EXPECT_EQ(w.text.find("TiB"), std::string::npos) << w.text;
  char buf[64];
  EXPECT_STREQ(memsave__not_kept(4, 5, buf, sizeof buf), "1 B more");
  EXPECT_STREQ(memsave__not_kept(2048, 1024, buf, sizeof buf), "not kept 1.0 KiB");
}

// The headline is on activations; the parameters our nodes reference (alive in the model
// anyway) are shown apart, in the text and in the JSON.
TEST(Report, ActivationsAndParametersApart) {
  fresh_state();
  memsave__shared.substituted[MEMSAVE_FAMILY_CONV] = 3;
  memsave__shared.kept = {1 << 20, 40 << 20};
  memsave__shared.stock = {6 << 20, 40 << 20};
  Written w = write_report(".txt");
  EXPECT_NE(w.text.find("summed over the run: activations 1.0 MiB (stock 6.0 MiB, not kept 5.0 MiB), "
                        "parameters referenced 40.0 MiB\n"),
            std::string::npos)
      << w.text;
  w = write_report(".json");
  EXPECT_NE(w.text.find("\"bytes_kept\":42991616,\"bytes_stock\":48234496,\"activation_bytes_kept\":1048576,"
                        "\"activation_bytes_stock\":6291456,\"parameter_bytes_kept\":41943040,"
                        "\"parameter_bytes_stock\":41943040"),
            std::string::npos)
      << w.text;
}

// Issue 25: the sums over the run grow with every step; the line leads with the most kept at
// once (hooks' live peaks), what compares with the peak tensor bytes, and labels the sums.
// The recomputed bytes are a sum: they go with the sums. JSON: new keys, the old ones kept.
TEST(Report, KeptLineLeadsWithTheMostKeptAtOnce) {
  fresh_state();
  memsave__shared.substituted[MEMSAVE_FAMILY_CONV] = 3;
  memsave__shared.kept = {617u << 20, 40 << 20};
  memsave__shared.stock = {uint64_t{19} << 30, 40 << 20};
  memsave__shared.recomputed = 3u << 20;
  memsave__shared.kept_live_peak = 12u << 20;
  memsave__shared.stock_live_peak = 40u << 20;
  memsave__shared.kept_live = 1u << 20;
  memsave__shared.stock_live = 2u << 20;
  struct memsave_stats st;
  ASSERT_EQ(memsave_get_stats(&st, sizeof st), 0);
  EXPECT_EQ(st.activation_bytes_kept_peak, 12u << 20);
  EXPECT_EQ(st.activation_bytes_stock_peak, 40u << 20);
  EXPECT_EQ(st.activation_bytes_kept_live, 1u << 20);
  EXPECT_EQ(st.activation_bytes_stock_live, 2u << 20);
  EXPECT_EQ(offsetof(struct memsave_stats, activation_bytes_kept_peak),
            offsetof(struct memsave_stats, recomputed_bytes) + sizeof(uint64_t))
      << "appended after recomputed_bytes";
  Written w = write_report(".txt");
  EXPECT_NE(w.text.find("memsave:   kept for backward: activations at most 12.0 MiB at once (stock would keep at "
                        "most 40.0 MiB, not kept 28.0 MiB); summed over the run: activations 617.0 MiB (stock "
                        "19.0 GiB, not kept 18.4 GiB, 3.0 MiB of it recomputed in backward), parameters referenced "
                        "40.0 MiB\n"),
            std::string::npos)
      << w.text;
  w = write_report(".json");
  EXPECT_NE(w.text.find("\"activation_bytes_kept\":646971392,"), std::string::npos) << w.text;
  EXPECT_NE(w.text.find("\"recomputed_bytes\":3145728,\"activation_bytes_kept_peak\":12582912,"
                        "\"activation_bytes_stock_peak\":41943040"),
            std::string::npos)
      << w.text;
  fresh_state();
}

// One name, one meaning: the JSON's cpu_peak_bytes is the struct's (since the last reset),
// cpu_peak_total_bytes the whole run's.
TEST(Report, JsonPeaksMeanWhatTheStructSays) {
  fresh_state();
  memsave__shared.cpu_current_bytes = 100;
  memsave__shared.cpu_peak_bytes = 5000;
  memsave_reset_peak();
  memsave__shared.cpu_peak_bytes = 700;
  struct memsave_stats st;
  memsave_get_stats(&st, sizeof st);
  ASSERT_EQ(st.cpu_peak_bytes, 700u);
  ASSERT_GE(st.cpu_peak_total_bytes, 5000u);
  Written w = write_report(".json");
  EXPECT_NE(w.text.find("\"cpu_peak_bytes\":700,\"cpu_peak_total_bytes\":" + std::to_string(st.cpu_peak_total_bytes)),
            std::string::npos)
      << w.text;
}

// A family whose every call went to stock because stock keeps the minimum already.
TEST(Report, PassthroughOnlyIsStockMinimal) {
  fresh_state();
  memsave__shared.passthrough[MEMSAVE_FAMILY_LINEAR] = 4;
  memsave__shared.substituted[MEMSAVE_FAMILY_CONV] = 2;
  Written w = write_report(".txt");
  EXPECT_NE(w.text.find("memsave:   linear     on                      0            4            0  stock minimal\n"),
            std::string::npos)
      << w.text;
  EXPECT_NE(w.text.find("memsave:   conv       on                      2            0            0  ok\n"),
            std::string::npos)
      << w.text;
  EXPECT_NE(w.text.find("memsave:   relu       on                      0            0            0  not used\n"),
            std::string::npos)
      << w.text;
}

// The family's state comes from the hooks: what they registered and what this build lacks.
TEST(Report, StatesFromTheHooks) {
  fresh_state();
  memsave__shared.opts.ops_mask &= ~(1u << MEMSAVE_FAMILY_LINEAR);
  memsave__shared.families_registered &= ~((1u << MEMSAVE_FAMILY_POOL) | (1u << MEMSAVE_FAMILY_RELU));
  memsave__shared.families_unavailable = 1u << MEMSAVE_FAMILY_POOL;
  Written w = write_report(".txt");
  EXPECT_NE(w.text.find("memsave:   linear     off "), std::string::npos) << w.text;
  EXPECT_NE(w.text.find("memsave:   pool       unavailable "), std::string::npos) << w.text;
  EXPECT_NE(w.text.find("  stock (not in this build)\n"), std::string::npos) << w.text;
  EXPECT_NE(w.text.find("memsave:   relu       unavailable "), std::string::npos) << "asked, not registered";
  memsave__shared.active = 0;  // MEMSAVE=0: nothing registered, the verdict says why
  w = write_report(".txt");
  EXPECT_NE(w.text.find("memsave:   relu       on                      0            0            0  stock (MEMSAVE=0)\n"),
            std::string::npos)
      << w.text;
}

// /dev/full: the open succeeds, every write fails. The report is lost; the shim says so,
// once, and carries on.
TEST(Report, UnwritableReportIsSaidOnce) {
  fresh_state();
  testing::internal::CaptureStderr();
  int rc = memsave__report_write_to("/dev/full", 1);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(count_lines(err), 1) << err;
  EXPECT_NE(err.find("memsave: warning: could not write the report to /dev/full; the report is lost: " +
                     std::string(strerror(ENOSPC))),
            std::string::npos)
      << err;
  testing::internal::CaptureStderr();
  rc = memsave__report_write_to("/nonexistent-memsave-dir/r.json", 1);  // cannot be opened
  err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(count_lines(err), 1) << err;
  EXPECT_NE(err.find("the report is lost"), std::string::npos) << err;
}

TEST(Report, UnwritableTimelineIsSaidOnce) {
  static struct memsave_timeline t;
  t.nsamples = 3;
  testing::internal::CaptureStderr();
  int rc = memsave__timeline_write_to("/dev/full", &t);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(count_lines(err), 1) << err;
  EXPECT_NE(err.find("memsave: warning: could not write the timeline to /dev/full; the timeline is lost: "),
            std::string::npos)
      << err;
  EXPECT_EQ(t.lock, 0) << "the hooks' lock is given back";
}

}  // namespace
