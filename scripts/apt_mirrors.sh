#!/bin/bash
# SPDX-License-Identifier: MIT
# apt_mirrors.sh [APT_ETC [CODENAME]]: the Debian mirror, security mirror and whether the
# host uses CODENAME-updates, read from the host's apt sources; trixie.sh sources it for
# memsave_apt_mirrors. Run directly, it prints what it found (default /etc/apt and the
# codename of /etc/os-release), one "key value" line each:
#
#   mirror URI      the first enabled `deb` entry for suite CODENAME with component main
#   security URI    the same for CODENAME-security (or the older CODENAME/updates)
#   updates yes|no  whether an entry for CODENAME-updates is enabled
#
# Reads APT_ETC/sources.list and APT_ETC/sources.list.d/*.list (one-line format, with or
# without [options]) and APT_ETC/sources.list.d/*.sources (deb822: Types, URIs, Suites,
# Components, Enabled: no), in apt's order. deb-src, disabled and commented entries and
# other suites (third-party repositories) are ignored; only http, https and file URIs count,
# which debootstrap can use. Prints nothing for what it did not find.

# One "URI SUITE COMPONENTS..." line per enabled deb entry of one-line files.
memsave__one_line_entries() {
  sed -e 's/#.*//' "$@" 2>/dev/null | awk '
    $1 != "deb" { next }
    { i = 2
      if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }  # [options], spaces or not
      if (i + 1 > NF) next
      line = $i; for (j = i + 1; j <= NF; j++) line = line " " $j
      print line }'
}

# The same for deb822 files: one line per URI x suite of each enabled deb stanza.
memsave__deb822_entries() {
  local f
  for f in "$@"; do
    awk '
      function flush(  n, m, u, s, i, j, uris, suites) {
        if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no") {
          n = split(uri, uris, " "); m = split(suite, suites, " ")
          for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print uris[i], suites[j], comps
        }
        types = uri = suite = comps = enabled = ""; key = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ { value = $0; sub(/^[ \t]+/, "", value); field[key] = field[key] " " value; set(key); next }
      { key = tolower($0); sub(/:.*/, "", key); value = $0; sub(/^[^:]*:[ \t]*/, "", value)
        field[key] = value; set(key) }
      function set(k) {
        if (k == "types") types = field[k]; else if (k == "uris") uri = field[k]
        else if (k == "suites") suite = field[k]; else if (k == "components") comps = field[k]
        else if (k == "enabled") enabled = field[k]
      }
      END { flush() }' "$f"
  done
}

# memsave_apt_mirrors APT_ETC CODENAME: prints the mirror, security and updates lines.
memsave_apt_mirrors() {
  local etc=$1 codename=$2 lists=() sources=() f
  for f in "$etc"/sources.list.d/*.list; do [ -f "$f" ] && lists+=("$f"); done
  for f in "$etc"/sources.list.d/*.sources; do [ -f "$f" ] && sources+=("$f"); done
  {
    [ -f "$etc/sources.list" ] && memsave__one_line_entries "$etc/sources.list"
    [ ${#lists[@]} = 0 ] || memsave__one_line_entries "${lists[@]}"
    [ ${#sources[@]} = 0 ] || memsave__deb822_entries "${sources[@]}"
  } | awk -v c="$codename" '
    { uri = $1; sub(/\/+$/, "", uri); suite = $2; sub(/\/+$/, "", suite); main = 0
      for (i = 3; i <= NF; i++) if ($i == "main") main = 1 }
    !main || uri !~ /^(https?:\/\/|file:\/)/ { next }
    suite == c && !mirror { mirror = uri }
    (suite == c "-security" || suite == c "/updates") && !security { security = uri }
    suite == c "-updates" { updates = 1 }
    END {
      if (mirror) print "mirror", mirror
      if (security) print "security", security
      print "updates", updates ? "yes" : "no" }'
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  codename=${2:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}
  memsave_apt_mirrors "${1:-/etc/apt}" "$codename"
fi
