#!/bin/sh
# callgraph.sh — the agent's files call only downward (the layers agent.h
# lists). For each .c file of the folder, lists the ag_ functions it
# defines and the ones it uses, then reports every pair of files that call
# each other (A uses a function defined in B and B one defined in A) and
# every call to a file that is not below the caller in the layer list of
# agent.h (so a cycle through three files is caught too); exit 1 on any. Comments and string literals are stripped first; a use
# is an ag_ name followed by "(" (a call) or by ";" (taken as a handler).
# usage: tests/agent/callgraph.sh [DIR (services/agent)] [-v]
dir=${1:-services/agent}
verbose=$2
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
for f in "$dir"/*.c; do
    b=$(basename "$f" .c)
    perl -0777 -pe 's{(/\*.*?\*/|//[^\n]*)|("(?:\\.|[^"\\\n])*")|(\x27(?:\\.|[^\x27\\\n])*\x27)}{defined $1 ? " " : "0"}gse' \
        "$f" >"$tmp/$b.src"
    # definitions: an ag_ name after a return type at the start of a line
    perl -ne 'print "$1\n" if /^(?!static)[A-Za-z_][\w \*]*?\b(ag_\w+)\s*\(/' "$tmp/$b.src" |
        sort -u >"$tmp/$b.def"
    perl -ne 'print "$1\n" while /\b(ag_\w+)\s*[\(;]/g' "$tmp/$b.src" | sort -u >"$tmp/$b.use"
done
for f in "$tmp"/*.def; do
    b=$(basename "$f" .def)
    : >"$tmp/$b.calls"
    for g in "$tmp"/*.def; do
        o=$(basename "$g" .def)
        [ "$o" = "$b" ] && continue
        if comm -12 "$tmp/$b.use" "$g" | grep -q .; then
            echo "$o" >>"$tmp/$b.calls"
        fi
    done
    if [ -n "$verbose" ]; then
        echo "$b.c defines: $(tr '\n' ' ' <"$f")"
        echo "$b.c calls into: $(tr '\n' ' ' <"$tmp/$b.calls")"
    fi
done
cycles=0
for f in "$tmp"/*.calls; do
    a=$(basename "$f" .calls)
    while read -r b; do
        if grep -qx "$a" "$tmp/$b.calls" && [ "$a" \< "$b" ]; then
            echo "cycle: $a.c <-> $b.c:" \
                "$(comm -12 "$tmp/$a.use" "$tmp/$b.def" | tr '\n' ' ')/" \
                "$(comm -12 "$tmp/$b.use" "$tmp/$a.def" | tr '\n' ' ')"
            cycles=$((cycles + 1))
        fi
    done <"$f"
done
echo "$cycles call cycle(s) between the files of $dir"
# The layers, bottom to top, as agent.h's comment lists them: " *   6b. x.c"
perl -ne 'print "$1\n" if /^\s\*\s+\d+b?\.\s+(\w+)\.c\b/' "$dir/agent.h" >"$tmp/layers"
upward=0
if [ ! -s "$tmp/layers" ]; then
    echo "no layer list in $dir/agent.h"
    upward=1
fi
rank() { grep -nx "$1" "$tmp/layers" | cut -d: -f1; }
for f in "$tmp"/*.calls; do
    a=$(basename "$f" .calls)
    ra=$(rank "$a")
    if [ -z "$ra" ]; then
        echo "$a.c is not in agent.h's layer list"
        upward=$((upward + 1))
        continue
    fi
    while read -r b; do
        rb=$(rank "$b")
        if [ -z "$rb" ] || [ "$rb" -ge "$ra" ]; then
            echo "upward: $a.c (layer $ra) calls $b.c (layer ${rb:-?}):" \
                "$(comm -12 "$tmp/$a.use" "$tmp/$b.def" | tr '\n' ' ')"
            upward=$((upward + 1))
        fi
    done <"$f"
done
echo "$upward call(s) against the layer order of $dir/agent.h"
[ "$cycles" -eq 0 ] && [ "$upward" -eq 0 ]
