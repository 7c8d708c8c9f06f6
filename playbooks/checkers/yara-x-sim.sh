#!/bin/sh
# yara-x-sim.sh - a stand-in for VirusTotal's YARA-X command line (`yr scan --output-format
# ndjson`), run by the lab's simulated Windows hosts (the same format in Rust:
# src/parser/yara_x.rs, checked there against the real yr 1.22.1).
#
# POSIX sh only (runs under dash). It scans nothing: what it prints on standard output
# (one JSON object per matched file, as yr 1.22.1 with -e -m -g -s prints it; clean files
# are not printed) and standard error, and its exit status, follow the scenario.
#
# Usage: sh yara-x-sim.sh scan [yr flags] RULES TARGET [simulator switches]
#   yr's arguments are accepted and ignored, except that the first must be `scan`.
#   Simulator switches (start with / or -, each takes a value; the lab appends them):
#     /scenario S    what the "scan" finds (default: clean), see below
#     /host NAME     accepted and ignored (the lab passes it)
#     /lang L, /encoding E, /user U, /process P, /pid N, /runkey K: accepted and ignored
#     /image PATH    the matched file (default C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe)
#
# Scenarios:
#   clean      prints nothing; exit 0 (yr prints only matched files)
#   detected   one file matched by rule Emotet_Loader; exit 0
#   detected2  that file and a second one (rules Emotet_Loader and Generic_Dropper); exit 0
#   noreport   the target cannot be opened: nothing on stdout, `error: can't open ...` on
#              stderr; exit 0 (as yr does)
#   hang       never finishes (loop of `sleep 1`)
#   crash      one complete line, then a line cut in the middle; exit 101 (a Rust panic)
#   anything else: clean.

set -u

if [ "${1:-}" != scan ]; then
    printf 'error: unrecognized subcommand %s\n' "${1:-}" >&2
    exit 2
fi
shift

SCENARIO=clean
IMAGE='C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe'
TARGET=''
while [ $# -gt 0 ]; do
    case "$1" in
    /scenario | -scenario)
        SCENARIO=${2:-clean}
        shift 2 || shift
        ;;
    /image | -image)
        IMAGE=${2:-$IMAGE}
        shift 2 || shift
        ;;
    /host | -host | /lang | -lang | /encoding | -encoding | /user | -user | /process | \
        -process | /pid | -pid | /runkey | -runkey)
        shift 2 || shift
        ;;
    *)
        TARGET=$1
        shift
        ;;
    esac
done

# A JSON string body: backslashes and quotes escaped (the paths the lab uses have no
# control characters).
json() {
    printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

line() {
    printf '{"path":"%s","rules":[{"identifier":"%s","namespace":"default","meta":[["author","pushscan lab"],["severity","%s"]],"tags":["emotet"],"strings":[{"identifier":"$mz","offset":0,"match":"MZ\\\\x90\\\\x00"}]}]}\n' \
        "$(json "$1")" "$2" "$3"
}

case "$SCENARIO" in
detected)
    line "$IMAGE" Emotet_Loader critical
    ;;
detected2)
    line "$IMAGE" Emotet_Loader critical
    line 'C:\Users\Public\Downloads\invoice.doc.exe' Generic_Dropper high
    ;;
noreport)
    printf "error: can't open \`%s\`: No such file or directory (os error 2)\n" "$TARGET" >&2
    ;;
hang)
    i=0
    while [ $i -lt 3600 ]; do
        sleep 1
        i=$((i + 1))
    done
    ;;
crash)
    line "$IMAGE" Emotet_Loader critical
    printf '{"path":"C:\\\\Users\\\\Public\\\\x.exe","rules":[{"ident'
    printf "thread '<unnamed>' panicked at src/commands/scan.rs:927:43:\ncalled \`Option::unwrap()\` on a \`None\` value\n" >&2
    exit 101
    ;;
esac
exit 0
