#!/bin/bash
# SPDX-License-Identifier: MIT
# test_docs.sh [SOURCE_DIR]: the documentation's own checks (issue 25), no build and no
# network needed.
#   1. Every relative link in README.md and docs/*.md, [text](target) and ![alt](target),
#      names a file or folder that exists; an anchor (#x or file.md#x) must be the GitHub
#      slug of a heading of that file. http(s):// and mailto: links are not followed; links
#      inside code (fenced blocks, `spans`) are not links.
#   2. README.md is at most 250 lines (the first ten minutes; the rest is in docs/).
#   3. Every MEMSAVE_* variable the shim reads (the option table of shim/options.c, and any
#      getenv("MEMSAVE...") in shim/*.c) is defined exactly once in the docs, and nothing
#      else is. A definition is a table row whose first cell is the variable in backticks,
#      `| \`MEMSAVE_X\` | ...`: the rows of docs/options.md's table, which shim/options.c prints
#      (test_shim checks that the two agree). README.md may name variables in prose, but has
#      no such row: it carries no copy of the reference.
# Prints one line per fault and exits 1 if there is any.
set -euo pipefail
# Never `... | grep -q` here: grep -q exits at its first match, the writer (bash's printf writes
# line by line) then dies of SIGPIPE, and pipefail turns a match into a failure, now and then
# (CI of stop 31: "a row for MEMSAVE_HOOKS, which the shim does not read"). Here-strings instead.
src=${1:-"$(dirname "$0")/.."}
cd "$src"
export LC_ALL=C

failures=0
fail() { echo "test_docs: FAIL: $*"; failures=$((failures + 1)); }

pages=(README.md docs/*.md)
for p in "${pages[@]}"; do [ -f "$p" ] || { echo "test_docs: no $p in $src"; exit 1; }; done

# The text outside fenced code blocks and inline code spans, as "FILE:LINE:TEXT".
prose() {
  awk '
    /^[ \t]*(```|~~~)/ { fence = !fence; next }
    fence { next }
    { line = $0; gsub(/`[^`]*`/, "", line); print FILENAME ":" FNR ":" line }
  ' "$@"
}

# GitHub's anchors of a page's headings, one per line: lowercased, punctuation but "-" and
# "_" dropped, spaces made "-", a repeated slug suffixed -1, -2, ...
anchors() {
  awk '
    /^[ \t]*(```|~~~)/ { fence = !fence; next }
    fence || !/^#+[ \t]/ { next }
    {
      h = $0; sub(/^#+[ \t]+/, "", h); sub(/[ \t]+#*[ \t]*$/, "", h)
      s = tolower(h); gsub(/[^a-z0-9 _-]/, "", s); gsub(/ /, "-", s)
      if (s in seen) { n = seen[s]++; print s "-" n } else { seen[s] = 1; print s }
    }
  ' "$1"
}

# 1. Links.
nlinks=0
while IFS= read -r rec; do
  file=${rec%%:*}; rest=${rec#*:}; line=${rest%%:*}; text=${rest#*:}
  while [[ $text =~ \]\(([^\)]*)\) ]]; do
    target=${BASH_REMATCH[1]}
    text=${text#*"${BASH_REMATCH[0]}"}
    target=${target%% *}  # drop a "title"
    case $target in http://* | https://* | mailto:* | "") continue ;; esac
    nlinks=$((nlinks + 1))
    path=${target%%#*}
    anchor=""
    [[ $target == *"#"* ]] && anchor=${target#*#}
    if [ -z "$path" ]; then
      resolved=$file
    else
      resolved="$(dirname "$file")/$path"
      resolved=${resolved#./}
      if [ ! -e "$resolved" ]; then
        fail "$file:$line: link to $target: no file $resolved"
        continue
      fi
    fi
    if [ -n "$anchor" ] && [[ $resolved == *.md ]] && [ -f "$resolved" ]; then
      grep -qxF -- "$anchor" <<<"$(anchors "$resolved")" || fail "$file:$line: link to $target: $resolved has no heading #$anchor"
    fi
  done
done < <(prose "${pages[@]}")

# 2. README's length.
readme_lines=$(awk 'END { print NR }' README.md)
[ "$readme_lines" -le 250 ] || fail "README.md has $readme_lines lines, more than 250 (move the rest to docs/)"

# 3. MEMSAVE_* variables: read by the shim, defined once in the docs.
read_vars=$( {
  sed -n 's/^[[:space:]]*{[[:space:]]*"\(MEMSAVE[A-Z0-9_]*\)"[[:space:]]*,.*/\1/p' shim/options.c
  { grep -ho 'getenv("MEMSAVE[A-Z0-9_]*")' shim/*.c || true; } | sed 's/getenv("\(.*\)")/\1/'
} | sort -u)
nvars=$(printf '%s\n' "$read_vars" | grep -c . || true)
if [ "$nvars" -lt 2 ]; then
  fail "found $nvars MEMSAVE_* variables in shim/options.c and shim/*.c: has the option table changed form?"
fi
# "FILE:LINE:NAME" for every definition row, outside fenced code.
defs=$(awk '
  /^[ \t]*(```|~~~)/ { fence = !fence; next }
  !fence && match($0, /^\|[ \t]*`MEMSAVE[A-Z0-9_]*`[ \t]*\|/) {
    name = substr($0, RSTART, RLENGTH); gsub(/[|` \t]/, "", name)
    print FILENAME ":" FNR ":" name
  }
' "${pages[@]}")
for v in $read_vars; do
  where=$(printf '%s\n' "$defs" | awk -F: -v v="$v" '$3 == v { printf "%s%s:%s", sep, $1, $2; sep = ", " }')
  count=$(printf '%s\n' "$defs" | awk -F: -v v="$v" '$3 == v { n++ } END { print n + 0 }')
  if [ "$count" -eq 0 ]; then
    fail "$v is read by the shim but has no row in docs/options.md's table"
  elif [ "$count" -gt 1 ]; then
    fail "$v is defined $count times ($where): keep the one row of docs/options.md"
  fi
done
while IFS=: read -r file line name; do
  [ -n "$name" ] || continue
  grep -qxF -- "$name" <<<"$read_vars" || fail "$file:$line: a row for $name, which the shim does not read"
  [ "$file" != README.md ] || fail "README.md:$line: a definition row for $name: README links to docs/options.md instead"
done <<<"$defs"

if [ "$failures" -gt 0 ]; then
  echo "test_docs: $failures fault(s)"
  exit 1
fi
echo "test_docs: ok: $nlinks relative links resolve; README.md has $readme_lines lines;" \
  "$nvars variables, each defined once ($(printf '%s\n' "$read_vars" | paste -sd ' ' -))"
