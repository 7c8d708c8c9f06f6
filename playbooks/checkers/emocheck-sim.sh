#!/bin/sh
# emocheck-sim.sh - a stand-in for JPCERT/CC EmoCheck: the checker of the shipped playbooks
# demo-local.yml and emocheck-ssh.yml, of pushscan's SSH tests and of the lab's hosts.
#
# POSIX sh only (runs under dash). It writes report files exactly as EmoCheck v2.4.0 does
# (the same formats in Rust: lab/testkit/src/emocheck.rs): CRLF line endings, the 52-underscore delimiter always
# followed by an empty line, trailing spaces after the English and French headings, JSON
# written by hand with only the backslashes of image_path/registry_key doubled.
#
# Usage: sh emocheck-sim.sh [switches]
#   EmoCheck switches (start with / or -):
#     /quiet         no console output and no final pause
#     /json          write <HOST>_<yyyymmddhhmmss>_emocheck.json instead of the .txt report
#     /output DIR    report directory; if DIR does not exist, say so and use the current dir
#     /debug         accepted and ignored (as in EmoCheck 2.x)
#     /help          print help, exit 0 without scanning
#   Simulator switches (same / or - prefix, each takes a value):
#     /host NAME     computer name for the file name and the JSON hostname (default: hostname)
#     /scenario S    what the "scan" does (default: clean), see below
#     /lang L        report language: en (default), ja, fr
#     /encoding E    how names and paths are written into the reports: utf8 (default) or
#                    cp932 (Japanese Windows' OEM code page: the image paths and registry keys,
#                    and with /lang ja the process names, become CP932 bytes, as EmoCheck's
#                    UTF-16 -> CP_OEMCP conversion writes them; a CP932 trail byte 0x5C, as in
#                    `ソ` = 0x83 0x5C, is a backslash byte and is doubled in JSON like any
#                    other). Converted with iconv(1) (glibc: package libc-bin); a character
#                    CP932 lacks is an error (exit 64).
#   Detected-process switches (same prefix, each takes a value; they change the first
#   process of detected/detected2/crash):
#     /user NAME     Windows user in the default image paths (default tanaka)
#     /process NAME  process name (default wfsrvhost.exe)
#     /pid N         process id, digits (default 4312)
#     /image PATH    image path (default C:\Users\<user>\AppData\Local\wfsrvhost\wfsrvhost.exe)
#     /runkey KEY    registry key (default HKEY_CURRENT_USER\...\Run\wfsrvhost)
#   Any other argument: prints "Invalid parameter: ..." and exits 0 without scanning, as
#   EmoCheck does.
#
# Like EmoCheck, every run without /quiet (including a run with no argument at all) ends with a
# Windows-style pause: "Press any key to continue . . ." then `read` from stdin. A remote run
# must pass /quiet or give the process an stdin that reaches EOF.
#
# Scenarios (report file = DIR/<HOST>_<yyyymmddhhmmss>_emocheck.txt, or .json with /json):
#   clean      report "not detected"; exit 0
#   detected   one process: wfsrvhost.exe, PID 4312,
#              C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe,
#              HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\wfsrvhost; exit 0
#   detected2  that process plus msrdpsvc.exe, PID 2208,
#              C:\Users\tanaka\AppData\Roaming\msrdpsvc\msrdpsvc.exe,
#              HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\msrdpsvc; exit 0
#   noreport   writes nothing; exit 0
#   hang       never finishes, writes nothing. The process (same pid) execs into
#                sh -c '<loop of sleep 1, 3600 times>' pushscan-sim-hang-<HOST>
#              after starting a background child
#                sh -c '<same loop>' pushscan-sim-hang-<HOST>-child
#              so `pgrep -f pushscan-sim-hang-<HOST>` finds both while they live. Killing only
#              the top process leaves the child running; a whole-tree kill leaves nothing
#              (each `sleep 1` under the loops ends within a second on its own).
#   crash      writes a detected report cut in the middle of the process block (text: after
#              "     Process ID    : 43", no line end; JSON: after "process_id":"43), exit 139
#   huge       a "not detected" report followed by NUL bytes, exactly 64 MiB (67108864
#              bytes) in total; exit 0
#   hostile    a detected report (PID 31337, C:\Users\Public\evil.exe, run key ...\Run\evil)
#              whose process name is <script>alert(1)</script>ESC[31mRED (a real ESC byte),
#              written as the newest report, after creating in DIR:
#                ..\..\evil_emocheck.txt                 (backslashes in the file name)
#                EVIL<LF><ESC>[31mPC_20250101000000_emocheck.txt   (newline, ESC in the name)
#                PC_20260101000000_emocheck.txt -> /etc/passwd     (symlink)
#              exit 0
#   slow       sleeps 2 s, then as clean
#
# Padding: everything runs from `main "$@"` followed by `exit` at the end of this file; the
# shell never reads past that line, so a comment block of any size (e.g. to make the file
# 1 MiB for benchmarks) can be appended after it.

VERSION=2.4.0
DELIM=____________________________________________________
ESC=$(printf '\033')
NL='
'
SLEEP_LOOP='i=0; while [ "$i" -lt 3600 ]; do sleep 1; i=$((i + 1)); done'

P1_NAME=wfsrvhost.exe
P1_PID=4312
P1_PATH='C:\Users\tanaka\AppData\Local\wfsrvhost\wfsrvhost.exe'
P1_KEY='HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\wfsrvhost'
P2_NAME=msrdpsvc.exe
P2_PID=2208
P2_PATH='C:\Users\tanaka\AppData\Roaming\msrdpsvc\msrdpsvc.exe'
P2_KEY='HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\msrdpsvc'

set_language() {
    case $1 in
    en)
        L_TIME='Scan time: '
        L_RESULT='[Result] '
        L_DETECTED='Detected Emotet process.'
        L_CLEAN='Emotet was not detected.'
        L_BLOCK='[Emotet Process] '
        L_NAME='     Process Name  : '
        L_PID='     Process ID    : '
        L_PATH='     Image Path    : '
        L_KEY='     Registry Key  : '
        L_ADVICE='Please remove or isolate the suspicious execution file.'
        ;;
    ja)
        L_TIME='プログラム実行時刻: '
        L_RESULT='[結果]'
        L_DETECTED='Emotetを検知しました。'
        L_CLEAN='検知しませんでした。'
        L_BLOCK='[詳細]'
        L_NAME='     プロセス名    : '
        L_PID='     プロセスID    : '
        L_PATH='     イメージパス  : '
        L_KEY='     レジストリキー: '
        L_ADVICE='イメージパスの実行ファイルを隔離/削除してください。'
        ;;
    fr)
        L_TIME="Temps d'éxécution: "
        L_RESULT='[Résultat] '
        L_DETECTED='Emotet détecté.'
        L_CLEAN="Emotet n'a pas été détecté."
        L_BLOCK='[Processus Emotet] '
        L_NAME='     Nom du processus: '
        L_PID='     PID             : '
        L_PATH='     Emplacement     : '
        L_KEY='     Clé de registre : '
        L_ADVICE='Veuillez supprimer le(s) fichier(s) détecté(s).'
        ;;
    *)
        printf 'emocheck-sim: unknown language: %s (en, ja or fr)\n' "$1" >&2
        exit 64
        ;;
    esac
}

# crlf LINE...: each argument as one CRLF-terminated line on fd 3 (the report file).
crlf() {
    for line in "$@"; do
        printf '%s\r\n' "$line" >&3
    done
}

# JSON escaping as EmoCheck does it: double every backslash byte, nothing else (bytewise:
# a CP932 trail byte 0x5C is doubled too).
json_escape() {
    printf '%s' "$1" | LC_ALL=C sed 's/\\/\\\\/g'
}

# to_cp932 TEXT: TEXT (UTF-8) as CP932 bytes on stdout; fails if CP932 cannot carry it.
to_cp932() {
    printf '%s' "$1" | iconv -f UTF-8 -t CP932 2>/dev/null
}

# apply_process_switches: /user, /process, /pid, /image, /runkey, then /encoding.
apply_process_switches() {
    if [ -n "$OPT_USER" ]; then
        P1_PATH='C:\Users\'"$OPT_USER"'\AppData\Local\wfsrvhost\wfsrvhost.exe'
        P2_PATH='C:\Users\'"$OPT_USER"'\AppData\Roaming\msrdpsvc\msrdpsvc.exe'
    fi
    [ -n "$OPT_PROCESS" ] && P1_NAME=$OPT_PROCESS
    [ -n "$OPT_PID" ] && P1_PID=$OPT_PID
    [ -n "$OPT_IMAGE" ] && P1_PATH=$OPT_IMAGE
    [ -n "$OPT_RUNKEY" ] && P1_KEY=$OPT_RUNKEY
    [ "$ENCODING" = cp932 ] || return 0
    for n in 1 2; do
        for field in PATH KEY NAME; do
            [ "$field" = NAME ] && [ "$LANGUAGE" != ja ] && continue
            eval "value=\$P${n}_$field"
            converted=$(to_cp932 "$value") || {
                printf 'emocheck-sim: cannot write %s in CP932 (iconv missing, or a character\n' \
                    "$value" >&2
                printf 'CP932 lacks)\n' >&2
                exit 64
            }
            eval "P${n}_$field=\$converted"
        done
    done
}

# load_process I: NAME/PID/IPATH/KEY of process I.
load_process() {
    eval "NAME=\$P$1_NAME PID=\$P$1_PID IPATH=\$P$1_PATH KEY=\$P$1_KEY"
}

# text_report N: the text report for processes 1..N (N=0: not detected).
text_report() {
    crlf "[EmoCheck v$VERSION]" "$L_TIME$SCAN_TIME" "$DELIM" ""
    if [ "$1" -eq 0 ]; then
        crlf "$L_RESULT" "$L_CLEAN"
        return
    fi
    crlf "$L_RESULT" "$L_DETECTED" ""
    i=1
    while [ "$i" -le "$1" ]; do
        load_process "$i"
        crlf "$L_BLOCK" "$L_NAME$NAME" "$L_PID$PID" "$L_PATH$IPATH" "$L_KEY$KEY"
        i=$((i + 1))
    done
    crlf "$DELIM" "" "$L_ADVICE"
}

# json_report N: the JSON report for processes 1..N (N=0: not detected).
json_report() {
    crlf "{" "  \"scan_time\":\"$SCAN_TIME\"," "  \"hostname\":\"$HOST\"," \
        "  \"emocheck_version\":\"$VERSION\","
    if [ "$1" -eq 0 ]; then
        crlf '  "is_infected":"no"' "}"
        return
    fi
    crlf '  "is_infected":"yes",' '  "emotet_processes":['
    i=1
    while [ "$i" -le "$1" ]; do
        load_process "$i"
        crlf "    {" "      \"process_name\":\"$NAME\"," "      \"process_id\":\"$PID\"," \
            "      \"image_path\":\"$(json_escape "$IPATH")\"," \
            "      \"registry_key\":\"$(json_escape "$KEY")\""
        if [ "$i" -eq "$1" ]; then
            crlf "    }"
        else
            crlf "    },"
        fi
        i=$((i + 1))
    done
    crlf "  ]" "}"
}

# partial_report: a detected report cut in the middle of its process block.
partial_report() {
    load_process 1
    if [ "$JSON" = 1 ]; then
        crlf "{" "  \"scan_time\":\"$SCAN_TIME\"," "  \"hostname\":\"$HOST\"," \
            "  \"emocheck_version\":\"$VERSION\"," '  "is_infected":"yes",' \
            '  "emotet_processes":[' "    {" "      \"process_name\":\"$NAME\","
        printf '%s' '      "process_id":"43' >&3
    else
        crlf "[EmoCheck v$VERSION]" "$L_TIME$SCAN_TIME" "$DELIM" "" \
            "$L_RESULT" "$L_DETECTED" "" "$L_BLOCK" "$L_NAME$NAME"
        printf '%s' "${L_PID}43" >&3
    fi
}

# open_report: take the time, name the report file, open it on fd 3 (truncated).
open_report() {
    now=$(date '+%Y%m%d%H%M%S %Y-%m-%d %H:%M:%S')
    STAMP=${now%% *}
    SCAN_TIME=${now#* }
    if [ "$JSON" = 1 ]; then ext=json; else ext=txt; fi
    REPORT=$OUTDIR/${HOST}_${STAMP}_emocheck.$ext
    exec 3>"$REPORT" || exit 1
}

# write_report N: a complete report for processes 1..N.
write_report() {
    if [ "$JSON" = 1 ]; then json_report "$1"; else text_report "$1"; fi
    exec 3>&-
}

# hostile_files: odd names and a symlink next to the reports.
hostile_files() {
    printf '%s\r\n' "[EmoCheck v$VERSION]" "${L_TIME}2025-01-01 00:00:00" "$DELIM" "" \
        "$L_RESULT" "$L_CLEAN" >"$OUTDIR/..\\..\\evil_emocheck.txt"
    printf '%s\r\n' "[EmoCheck v$VERSION]" "${L_TIME}2025-01-01 00:00:00" "$DELIM" "" \
        "$L_RESULT" "$L_CLEAN" >"$OUTDIR/EVIL$NL${ESC}[31mPC_20250101000000_emocheck.txt"
    ln -sf /etc/passwd "$OUTDIR/PC_20260101000000_emocheck.txt"
}

console_report() {
    [ "$QUIET" = 1 ] && return
    if [ "$1" -eq 0 ]; then
        printf 'No detection.\n\n'
    else
        i=1
        while [ "$i" -le "$1" ]; do
            load_process "$i"
            printf '[!!] Detected\n     Process Name: %s\n     PID         : %s\n' "$NAME" "$PID"
            printf '     Image Path  : %s\n' "$IPATH"
            i=$((i + 1))
        done
        printf '%s\nEmotet was detected.\n' "$DELIM"
        printf 'Please remove or isolate the suspicious execution file.\n\n'
    fi
}

console_done() {
    [ "$QUIET" = 1 ] && return
    printf 'Report has exported to following file.\n\n\t%s\n\nThank you for using our tool.\n\n' \
        "$REPORT"
}

banner() {
    printf '%s\nEmoCheck simulator (pushscan lab) - behaves like EmoCheck v%s\n%s\n' \
        "$DELIM" "$VERSION" "$DELIM"
}

usage() {
    printf '[Options]\nSuppress command line output:\n\t/quiet or -quiet\n'
    printf 'Export report in JSON sytle:\n\t/json or -json\n'
    printf 'Set output directory (default: current directory ):\n'
    printf '\t/output [output directory] or -output [output directory]\n'
    printf 'Simulator: /host NAME, /scenario clean|detected|detected2|noreport|hang|crash|'
    printf 'huge|hostile|slow, /lang en|ja|fr, /encoding utf8|cp932, /user NAME, /process NAME,\n'
    printf '/pid N, /image PATH, /runkey KEY\n'
}

pause() {
    [ "$QUIET" = 1 ] && return
    printf 'Press any key to continue . . . '
    read -r _ || :
}

main() {
    QUIET=0
    JSON=0
    OUTDIR=.
    HOST=
    SCENARIO=clean
    LANGUAGE=en
    ENCODING=utf8
    OPT_USER=
    OPT_PROCESS=
    OPT_PID=
    OPT_IMAGE=
    OPT_RUNKEY=
    while [ "$#" -gt 0 ]; do
        case $1 in
        /quiet | -quiet) QUIET=1 ;;
        /json | -json) JSON=1 ;;
        /debug | -debug) ;;
        /help | -help)
            banner
            usage
            exit 0
            ;;
        /output | -output)
            if [ "$#" -lt 2 ]; then
                printf 'Invalid parameter: %s\n' "${1#?}"
                exit 0
            fi
            if [ -d "$2" ]; then
                OUTDIR=${2%/}
                [ -n "$OUTDIR" ] || OUTDIR=/
            else
                printf 'Invalid output path: %s\n' "$2"
                echo "Output directory does not exist: report will be generated on current directory,"
            fi
            shift
            ;;
        /host | -host | /scenario | -scenario | /lang | -lang | /encoding | -encoding | \
            /user | -user | /process | -process | /pid | -pid | /image | -image | /runkey | -runkey)
            if [ "$#" -lt 2 ]; then
                printf 'emocheck-sim: %s needs a value\n' "$1" >&2
                exit 64
            fi
            case $1 in
            ?host) HOST=$2 ;;
            ?scenario) SCENARIO=$2 ;;
            ?lang) LANGUAGE=$2 ;;
            ?encoding) ENCODING=$2 ;;
            ?user) OPT_USER=$2 ;;
            ?process) OPT_PROCESS=$2 ;;
            ?pid) OPT_PID=$2 ;;
            ?image) OPT_IMAGE=$2 ;;
            ?runkey) OPT_RUNKEY=$2 ;;
            esac
            shift
            ;;
        [/-]?*)
            printf 'Invalid parameter: %s\n' "${1#?}"
            exit 0
            ;;
        *)
            printf 'Invalid parameter: %s\n' "$1"
            exit 0
            ;;
        esac
        shift
    done
    case $SCENARIO in
    clean | detected | detected2 | noreport | hang | crash | huge | hostile | slow) ;;
    *)
        printf 'emocheck-sim: unknown scenario: %s\n' "$SCENARIO" >&2
        exit 64
        ;;
    esac
    case $ENCODING in
    utf8 | cp932) ;;
    *)
        printf 'emocheck-sim: unknown encoding: %s (utf8 or cp932)\n' "$ENCODING" >&2
        exit 64
        ;;
    esac
    case $OPT_PID in
    *[!0-9]*)
        printf 'emocheck-sim: /pid needs digits: %s\n' "$OPT_PID" >&2
        exit 64
        ;;
    esac
    if [ -z "$HOST" ]; then
        HOST=$(hostname 2>/dev/null || uname -n)
    fi
    set_language "$LANGUAGE"
    apply_process_switches

    [ "$QUIET" = 1 ] || banner
    case $SCENARIO in
    clean | slow)
        [ "$SCENARIO" = slow ] && sleep 2
        open_report
        write_report 0
        console_report 0
        ;;
    detected)
        open_report
        write_report 1
        console_report 1
        ;;
    detected2)
        open_report
        write_report 2
        console_report 2
        ;;
    noreport)
        console_report 0
        pause
        exit 0
        ;;
    hang)
        marker=pushscan-sim-hang-$HOST
        sh -c "$SLEEP_LOOP" "$marker-child" &
        exec sh -c "$SLEEP_LOOP" "$marker"
        ;;
    crash)
        open_report
        partial_report
        exec 3>&-
        exit 139
        ;;
    huge)
        open_report
        dd if=/dev/zero bs=1048576 count=64 2>/dev/null >&3 || exit 1
        exec 3<>"$REPORT" || exit 1
        write_report 0
        console_report 0
        ;;
    hostile)
        hostile_files
        P1_NAME="<script>alert(1)</script>${ESC}[31mRED"
        P1_PID=31337
        P1_PATH='C:\Users\Public\evil.exe'
        P1_KEY='HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\evil'
        open_report
        write_report 1
        console_report 1
        ;;
    *)
        printf 'emocheck-sim: unknown scenario: %s\n' "$SCENARIO" >&2
        exit 64
        ;;
    esac
    console_done
    pause
    exit 0
}

main "$@"
exit
# Nothing below this line is ever read: padding for benchmarks may be appended here.
