// SPDX-License-Identifier: MIT
// test_shim: the shim's core without preload and without LibTorch: option parsing, the
// warnings for bad values, the stats ABI and the error names.
#include <gtest/gtest.h>

#include <cstdlib>
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

TEST(Options, OpsList) {
  int ok;
  EXPECT_EQ(memsave__parse_ops("conv", &ok), 1u << MEMSAVE_FAMILY_CONV);
  EXPECT_TRUE(ok);
  EXPECT_EQ(memsave__parse_ops("conv, relu", &ok), (1u << MEMSAVE_FAMILY_CONV) | (1u << MEMSAVE_FAMILY_RELU));
  EXPECT_EQ(memsave__parse_ops("all", &ok), (1u << MEMSAVE_FAMILY_COUNT) - 1);
  EXPECT_EQ(memsave__parse_ops("all,-linear", &ok), ((1u << MEMSAVE_FAMILY_COUNT) - 1) & ~(1u << MEMSAVE_FAMILY_LINEAR));
  EXPECT_EQ(memsave__parse_ops("none", &ok), 0u);
  // A list that starts with an exclusion starts from the default set.
  unsigned dflt_minus_dropout = memsave__parse_ops("-dropout", &ok);
  EXPECT_TRUE(ok);
  EXPECT_FALSE(dflt_minus_dropout & (1u << MEMSAVE_FAMILY_DROPOUT));
  EXPECT_TRUE(dflt_minus_dropout & (1u << MEMSAVE_FAMILY_CONV));
  memsave__parse_ops("conv,bogus", &ok);
  EXPECT_FALSE(ok);
}

TEST(Options, DefaultsWithoutEnvironment) {
  unsetenv("MEMSAVE");
  unsetenv("MEMSAVE_OPS");
  memsave__options_read();
  EXPECT_EQ(memsave__opts.enable, 1);
  EXPECT_FALSE(memsave__opts.ops_mask & (1u << MEMSAVE_FAMILY_LINEAR)) << "linear is off by default";
  EXPECT_TRUE(memsave__opts.ops_mask & (1u << MEMSAVE_FAMILY_CONV));
}

TEST(Options, BadValuesWarnOnceAndKeepDefault) {
  struct Case {
    const char *name, *value;
  } cases[] = {{"MEMSAVE", "maybe"}, {"MEMSAVE_OPS", "conv,warp"}, {"MEMSAVE_VERBOSE", "7"}, {"MEMSAVE_TRACE", "-3"}};
  for (const Case& c : cases) {
    std::string err = read_with_env(c.name, c.value);
    EXPECT_EQ(count_lines(err), 1) << err;
    EXPECT_NE(err.find("memsave: warning: "), std::string::npos) << err;
    EXPECT_NE(err.find(std::string(c.name) + "=\"" + c.value + "\""), std::string::npos) << err;
    EXPECT_NE(err.find("accepted"), std::string::npos) << err;
  }
  EXPECT_EQ(memsave__opts.enable, 1);
  EXPECT_EQ(memsave__opts.verbose, 0);
  EXPECT_EQ(memsave__opts.trace, 0);
}

TEST(Options, GoodValuesAreSilent) {
  EXPECT_EQ(read_with_env("MEMSAVE", "off"), "");
  EXPECT_EQ(memsave__opts.enable, 0);
  EXPECT_EQ(read_with_env("MEMSAVE_OPS", "conv,-conv,relu"), "");
  EXPECT_EQ(memsave__opts.ops_mask, 1u << MEMSAVE_FAMILY_RELU);
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

}  // namespace
