/* SPDX-License-Identifier: MIT */
/* common.h: what the shim and the memsave command share (the static library memsave_common):
 * the option grammar, the family names and the byte formatter, so that both accept the same
 * values and print the same numbers. No state, no environment, nothing of the loader. */
#ifndef MEMSAVE_COMMON_H
#define MEMSAVE_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "memsave.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every family of the table, for MEMSAVE_OPS and --ops: "conv, linear, ..., dropout". */
#define MEMSAVE_FAMILY_NAME_ITEM_(id, name, on, doc) #name ", "
#define MEMSAVE_OPS_ACCEPTED "a comma list of " MEMSAVE_FAMILY_MAP(MEMSAVE_FAMILY_NAME_ITEM_) "all, none, -name"
#define MEMSAVE_ALL_FAMILIES ((1u << MEMSAVE_FAMILY_COUNT) - 1u)

/* grammar.c: the one forgiving grammar. Each returns 1 and sets *out, or returns 0 and
 * leaves *out alone. */
/* 1/0, on/off, yes/no, true/false, in any case. */
int memsave__parse_bool(const char *value, int *out);
/* A plain decimal integer from lo to hi. */
int memsave__parse_int(const char *value, long lo, long hi, int *out);
/* MEMSAVE_POISON: 0/off/no/false, 1/on/yes/true/nan (NaN), max (the largest finite value),
 * in any case; *out is a MEMSAVE_POISON_* value (hooks_abi.h). */
int memsave__parse_poison(const char *value, int *out);
/* "off", "nan" or "max". */
const char *memsave__poison_name(int poison);
/* "conv,relu", "all", "all,-linear", "-dropout" (the default set minus dropout): a list that
 * starts with an exclusion starts from the default set. Unknown names give 0. */
int memsave__parse_ops(const char *value, unsigned *out);
/* "conv,relu", or "none" for an empty mask; returns buf. */
const char *memsave__ops_string(unsigned mask, char *buf, size_t cap);
/* The family with this name (len bytes, any case), or -1. */
int memsave__family_index(const char *name, size_t len);

/* format.c: "1.5 MiB"; returns buf. */
const char *memsave__human(uint64_t bytes, char *buf, size_t cap);
/* What was not kept: "not kept 1.5 MiB" when stock >= ours, "1 B more" when ours keeps more
 * (a saving can be negative: a 1-element dropout keeps a 4-byte value and 1 mask byte
 * against stock's 4-byte noise); returns buf. Never wraps. */
const char *memsave__not_kept(uint64_t stock, uint64_t ours, char *buf, size_t cap);
/* The headline of the bytes kept for backward, the most kept at once first: "activations at
 * most X at once (stock would keep at most Y, not kept Z); summed over the run: activations
 * S (stock T, not kept U[, R of it recomputed in backward]), parameters referenced P";
 * returns buf (512 bytes hold any). */
const char *memsave__kept_line(const struct memsave_stats *st, char *buf, size_t cap);

/* A family's state is "on", "off" (not in MEMSAVE_OPS) or "unavailable" (asked, not in this
 * build). Its verdict, one phrase: "ok", "stock minimal" (every call passed through: stock
 * keeps the minimum already), "not used", "see fallbacks", or why stock was used. */
const char *memsave__family_verdict(const char *state, int active, const struct memsave_stats *st, int family);
/* The family table: a header row and one row per family, each line starting with prefix. */
void memsave__family_rows(FILE *f, const char *prefix, const char *const states[], int active,
                          const struct memsave_stats *st);

/* JSON: a string with its escapes; the "families" member and the byte figures of st. */
void memsave__json_string(FILE *f, const char *s);
void memsave__json_counts(FILE *f, const char *const states[], const struct memsave_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* MEMSAVE_COMMON_H */
