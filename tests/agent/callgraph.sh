#!/bin/sh
# callgraph.sh — the agent's files call only downward (docs: agent.h).
# For each .c file in services/agent, lists the ag_ functions it defines and
# the ones it calls, then reports every pair of files that call each other
# (A calls a function defined in B and B one defined in A). Exit 1 when
# there is one. Comments and strings are stripped first; a call is a name
# followed by "(" that is not the definition itself.
# usage: tests/agent/callgraph.sh [services/agent] [-v]
dir=${1:-services/agent}
verbose=$2
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
for f in "$dir"/*.c; do
    b=$(basename "$f" .c)
    # strip /* */ and // comments and string literals
    perl -0777 -pe 's{/\*.*?\*/}{ }gs; s{//[^\n]*}{}g; s{"(\\.|[^"\\])*"}{""}g' "$f" >"$tmp/$b.src"
    # definitions: a name at the start of a line after a return type
    perl -ne 'print "$1\n" if /^(?!static)[A-Za-z_][\w \*]*?\b(ag_\w+)\s*\(/' "$tmp/$b.src" |
        sort -u >"$tmp/$b.def"
    # uses: every ag_ name followed by "(" (or taken as a pointer: "= ag_x;")
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
echo "$cycles call cycle(s) between files of $dir"
[ "$cycles" -eq 0 ]
