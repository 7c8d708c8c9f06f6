#!/bin/sh
# hayabusa-sim.sh - a stand-in for Yamato Security's Hayabusa (`hayabusa json-timeline -L -o
# FILE`), run by the lab's simulated Windows hosts. Hayabusa cannot be installed here; the
# lines it writes follow Hayabusa's documented JSONL formats (the same formats in Rust:
# src/parser/hayabusa.rs): with /lang en the 4.0 form (empty fields left out, full level
# names as with --disable-abbreviations, verbose profile), with /lang ja or fr the 3.5 form
# (`-` for a missing value, abbreviated levels, standard profile).
#
# POSIX sh only (runs under dash).
#
# Usage: sh hayabusa-sim.sh json-timeline [hayabusa flags] -o FILE [simulator switches]
#   Hayabusa's flags are accepted and ignored, except -o FILE (the timeline written).
#   Simulator switches (start with / or -, each takes a value; the lab appends them):
#     /scenario S    what the "hunt" finds (default: clean), see below
#     /host NAME     the Computer field (default: $COMPUTERNAME, else hostname)
#     /lang L        en: the 4.0 form; ja, fr: the 3.5 form (see above)
#     /image PATH    the process image in the detections' Details
#     /encoding E, /user U, /process P, /pid N, /runkey K: accepted and ignored
#
# Scenarios (exit 0 unless said):
#   clean      informational and low lines only (below the shipped min_level, medium)
#   detected   those plus a high detection (record 4101)
#   detected2  those plus a critical detection (record 4102)
#   noreport   writes no timeline
#   hang       never finishes (loop of `sleep 1`)
#   crash      the high detection, then a line cut in the middle; exit 1
#   anything else: clean.

set -u

case "${1:-}" in
json-timeline | dfir-timeline) shift ;;
*)
    printf 'error: unrecognized subcommand %s\n' "${1:-}" >&2
    exit 2
    ;;
esac

SCENARIO=clean
HOST=${COMPUTERNAME:-$(hostname)}
LANG_=en
IMAGE='C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe'
OUT=''
while [ $# -gt 0 ]; do
    case "$1" in
    -o | --output)
        OUT=${2:-}
        shift 2 || shift
        ;;
    /scenario | -scenario) SCENARIO=${2:-clean}; shift 2 || shift ;;
    /host | -host) HOST=${2:-$HOST}; shift 2 || shift ;;
    /lang | -lang) LANG_=${2:-en}; shift 2 || shift ;;
    /image | -image) IMAGE=${2:-$IMAGE}; shift 2 || shift ;;
    /encoding | -encoding | /user | -user | /process | -process | /pid | -pid | /runkey | -runkey)
        shift 2 || shift
        ;;
    -m | -p | -t | -d | -f | -r | --min-level | --profile | --output-type)
        shift 2 || shift
        ;;
    *) shift ;;
    esac
done

if [ -z "$OUT" ]; then
    printf 'error: -o FILE is required by this stand-in\n' >&2
    exit 2
fi

json() {
    printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}
H=$(json "$HOST")
IMG=$(json "$IMAGE")

# One line: LEVEL_FULL LEVEL_ABBREV TITLE EVENTID RECORD DETAILS_JSON
line() {
    if [ "$LANG_" = en ]; then
        # 3.6 and later leave an empty value out.
        details=''
        [ "$6" = '"-"' ] || details=",\"Details\":$6"
        printf '{"Timestamp":"2026-12-01 09:00:%02d.000 +09:00","RuleTitle":"%s","Level":"%s","Computer":"%s","Channel":"Sec","EventID":%s,"MitreTactics":["Exec"],"MitreTags":["T1059"],"RecordID":%s%s,"RuleFile":"lab.yml","RuleID":"00000000-0000-4000-8000-0000000000%s","EvtxFile":"C:\\\\Windows\\\\System32\\\\winevt\\\\Logs\\\\Security.evtx"}\n' \
            "$(($5 % 60))" "$3" "$1" "$H" "$4" "$5" "$details" "$(($5 % 100))"
    else
        printf '{"Timestamp":"2026-12-01 09:00:%02d.000 +09:00","RuleTitle":"%s","Level":"%s","Computer":"%s","Channel":"Sec","EventID":%s,"RecordID":%s,"Details":%s,"ExtraFieldInfo":"-","RuleID":"00000000-0000-4000-8000-0000000000%s"}\n' \
            "$(($5 % 60))" "$3" "$2" "$H" "$4" "$5" "$6" "$(($5 % 100))"
    fi
}

# Before the timeline is opened: these write none.
case "$SCENARIO" in
noreport) exit 0 ;;
hang)
    i=0
    while [ $i -lt 3600 ]; do
        sleep 1
        i=$((i + 1))
    done
    exit 0
    ;;
esac
{
    line informational info 'Logon (Network)' 4624 4001 '{"User":"tanaka"}'
    line low low 'Service Installed' 7045 4002 '"-"'
    case "$SCENARIO" in
    detected | detected2 | crash)
        line high high 'Emotet Loader Process Creation' 4688 4101 "{\"Proc\":\"$IMG\"}"
        ;;
    esac
    case "$SCENARIO" in
    detected2)
        line critical crit 'Credential Dumping via Mimikatz' 4688 4102 '{"Cmdline":"mimikatz.exe sekurlsa::logonpasswords"}'
        ;;
    crash)
        printf '{"Timestamp":"2026-12-01 09:01:00.000 +09:00","RuleTitle":"Cut'
        ;;
    esac
} >"$OUT" || exit 1
if [ "$SCENARIO" = crash ]; then
    printf 'thread main panicked\n' >&2
    exit 1
fi
exit 0
