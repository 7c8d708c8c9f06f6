/* emocheck-wine.exe: the lab's EmoCheck stand-in built for Windows (mingw), run on Wine hosts.
 *
 * It does what EmoCheck does, with a simpler notion of "Emotet": a running process whose full
 * image path is the data of a value under HKCU\Software\Microsoft\Windows\CurrentVersion\Run
 * (compared case-insensitively; a quoted data is taken up to its closing quote). Processes come
 * from Toolhelp32 and QueryFullProcessImageNameW, the Run values from the registry, both live
 * from the host's wineserver. It writes the report exactly as EmoCheck v2.4.0 does (see
 * lab/testkit/src/emocheck.rs and playbooks/checkers/emocheck-sim.sh, the native stand-in):
 *   /json: <DIR>\<COMPUTERNAME>_<yyyymmddhhmmss>_emocheck.json, else ..._emocheck.txt,
 *   CRLF lines, hand-written JSON whose only escaping doubles the backslashes of image_path
 *   and registry_key, is_infected "yes"/"no", process_id a string, names and paths in the OEM
 *   code page (EmoCheck converts UTF-16 with CP_OEMCP). Reports are in English.
 * Switches: /quiet /json /output DIR /debug /help (or with '-'); anything else prints
 * "Invalid parameter" and exits 0 without scanning; without /quiet it ends with a pause. */
#include <windows.h>
#include <tlhelp32.h>
#include <stdio.h>
#include <string.h>
#include <wchar.h>

#define VERSION "2.4.0"
#define DELIM "____________________________________________________"
#define RUN_KEY L"Software\\Microsoft\\Windows\\CurrentVersion\\Run"
#define MAX_FOUND 64
#define MAX_VALUES 256

struct found {
    char name[1024];
    unsigned long pid;
    char image[4096];
    char key[4096];
};

static struct found found[MAX_FOUND];
static int nfound;
static WCHAR value_names[MAX_VALUES][256];
static WCHAR value_paths[MAX_VALUES][1024];
static int nvalues;

static void oem(const WCHAR *w, char *out, int cap)
{
    int n = WideCharToMultiByte(CP_OEMCP, 0, w, -1, out, cap, NULL, NULL);
    if (n <= 0)
        out[0] = 0;
}

/* The program path of a Run value's data: "C:\a b\x.exe" /arg -> C:\a b\x.exe. */
static void program_of(const WCHAR *data, WCHAR *out, size_t cap)
{
    const WCHAR *s = data;
    while (*s == L' ')
        s++;
    if (*s == L'"') {
        const WCHAR *end = wcschr(s + 1, L'"');
        size_t len = end ? (size_t)(end - s - 1) : wcslen(s + 1);
        if (len >= cap)
            len = cap - 1;
        wcsncpy(out, s + 1, len);
        out[len] = 0;
        return;
    }
    wcsncpy(out, s, cap - 1);
    out[cap - 1] = 0;
}

static void read_run_values(void)
{
    HKEY key;
    if (RegOpenKeyExW(HKEY_CURRENT_USER, RUN_KEY, 0, KEY_READ, &key) != ERROR_SUCCESS)
        return;
    for (DWORD i = 0; nvalues < MAX_VALUES; i++) {
        WCHAR name[256];
        BYTE data[4096];
        DWORD nlen = 256, dlen = sizeof data - 2, type;
        LONG r = RegEnumValueW(key, i, name, &nlen, NULL, &type, data, &dlen);
        if (r == ERROR_NO_MORE_ITEMS)
            break;
        if (r != ERROR_SUCCESS || (type != REG_SZ && type != REG_EXPAND_SZ))
            continue;
        data[dlen] = 0;
        data[dlen + 1] = 0;
        wcsncpy(value_names[nvalues], name, 255);
        value_names[nvalues][255] = 0;
        program_of((const WCHAR *)data, value_paths[nvalues], 1024);
        nvalues++;
    }
    RegCloseKey(key);
}

static void scan(void)
{
    read_run_values();
    HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
    if (snap == INVALID_HANDLE_VALUE)
        return;
    PROCESSENTRY32W pe;
    pe.dwSize = sizeof pe;
    if (Process32FirstW(snap, &pe)) {
        do {
            WCHAR path[32768];
            DWORD len = 32768;
            HANDLE h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pe.th32ProcessID);
            if (!h)
                continue;
            BOOL ok = QueryFullProcessImageNameW(h, 0, path, &len);
            CloseHandle(h);
            if (!ok)
                continue;
            for (int v = 0; v < nvalues && nfound < MAX_FOUND; v++) {
                if (_wcsicmp(path, value_paths[v]) != 0)
                    continue;
                struct found *f = &found[nfound++];
                WCHAR key[1024];
                _snwprintf(key, 1024, L"HKEY_CURRENT_USER\\%ls\\%ls", RUN_KEY, value_names[v]);
                key[1023] = 0;
                oem(pe.szExeFile, f->name, sizeof f->name);
                f->pid = pe.th32ProcessID;
                oem(path, f->image, sizeof f->image);
                oem(key, f->key, sizeof f->key);
                break;
            }
        } while (Process32NextW(snap, &pe));
    }
    CloseHandle(snap);
}

/* Writes s with every backslash byte doubled (EmoCheck's only JSON escaping). */
static void put_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
}

int main(int argc, char **argv)
{
    int quiet = 0, json = 0;
    const char *outdir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] == '/' || a[0] == '-') {
            const char *s = a + 1;
            if (!_stricmp(s, "quiet")) { quiet = 1; continue; }
            if (!_stricmp(s, "json")) { json = 1; continue; }
            if (!_stricmp(s, "debug")) continue;
            if (!_stricmp(s, "output") && i + 1 < argc) { outdir = argv[++i]; continue; }
            if (!_stricmp(s, "help")) {
                printf("[Options]\nSuppress command line output:\n\t/quiet or -quiet\n"
                       "Export report in JSON sytle:\n\t/json or -json\n"
                       "Set output directory (default: current directory ):\n"
                       "\t/output [output directory] or -output [output directory]\n");
                return 0;
            }
        }
        printf("Invalid parameter: %s\n", a);
        return 0;
    }
    if (!quiet)
        printf("%s\nEmoCheck stand-in (pushscan lab, Windows build) - behaves like EmoCheck v%s\n%s\n",
               DELIM, VERSION, DELIM);

    char dir[MAX_PATH * 4] = ".";
    if (outdir) {
        DWORD attr = GetFileAttributesA(outdir);
        if (attr != INVALID_FILE_ATTRIBUTES && (attr & FILE_ATTRIBUTE_DIRECTORY)) {
            strncpy(dir, outdir, sizeof dir - 1);
            dir[sizeof dir - 1] = 0;
        } else {
            printf("Output directory \"%s\" does not exist. Report will be exported to current directory.\n", outdir);
        }
    }
    size_t dl = strlen(dir);
    while (dl > 0 && (dir[dl - 1] == '\\' || dir[dl - 1] == '/'))
        dir[--dl] = 0;

    scan();

    /* Larger than MAX_COMPUTERNAME_LENGTH: a lab name may be longer than NetBIOS allows. */
    WCHAR wname[256];
    DWORD wn = 256;
    char host[256] = "UNKNOWN";
    if (GetComputerNameW(wname, &wn))
        oem(wname, host, sizeof host);
    SYSTEMTIME t;
    GetLocalTime(&t);
    char stamp[32], scan_time[32], path[MAX_PATH * 8];
    snprintf(stamp, sizeof stamp, "%04u%02u%02u%02u%02u%02u", t.wYear, t.wMonth, t.wDay, t.wHour,
             t.wMinute, t.wSecond);
    snprintf(scan_time, sizeof scan_time, "%04u-%02u-%02u %02u:%02u:%02u", t.wYear, t.wMonth,
             t.wDay, t.wHour, t.wMinute, t.wSecond);
    snprintf(path, sizeof path, "%s\\%s_%s_emocheck.%s", dir, host, stamp, json ? "json" : "txt");

    /* Binary mode: the CRLFs below are written as they are. */
    FILE *f = fopen(path, "wb");
    if (!f) {
        printf("Cannot create the report %s\n", path);
        return 1;
    }
    if (json) {
        fprintf(f, "{\r\n  \"scan_time\":\"%s\",\r\n  \"hostname\":\"%s\",\r\n"
                   "  \"emocheck_version\":\"%s\",\r\n", scan_time, host, VERSION);
        if (nfound == 0) {
            fprintf(f, "  \"is_infected\":\"no\"\r\n}\r\n");
        } else {
            fprintf(f, "  \"is_infected\":\"yes\",\r\n  \"emotet_processes\":[\r\n");
            for (int i = 0; i < nfound; i++) {
                fprintf(f, "    {\r\n      \"process_name\":\"%s\",\r\n      \"process_id\":\"%lu\",\r\n"
                           "      \"image_path\":\"", found[i].name, found[i].pid);
                put_escaped(f, found[i].image);
                fprintf(f, "\",\r\n      \"registry_key\":\"");
                put_escaped(f, found[i].key);
                fprintf(f, "\"\r\n    }%s\r\n", i + 1 < nfound ? "," : "");
            }
            fprintf(f, "  ]\r\n}\r\n");
        }
    } else {
        fprintf(f, "[EmoCheck v%s]\r\nScan time: %s\r\n%s\r\n\r\n", VERSION, scan_time, DELIM);
        if (nfound == 0) {
            fprintf(f, "[Result] \r\nEmotet was not detected.\r\n");
        } else {
            fprintf(f, "[Result] \r\nDetected Emotet process.\r\n\r\n");
            for (int i = 0; i < nfound; i++)
                fprintf(f, "[Emotet Process] \r\n     Process Name  : %s\r\n     Process ID    : %lu\r\n"
                           "     Image Path    : %s\r\n     Registry Key  : %s\r\n",
                        found[i].name, found[i].pid, found[i].image, found[i].key);
            fprintf(f, "%s\r\n\r\nPlease remove or isolate the suspicious execution file.\r\n", DELIM);
        }
    }
    fclose(f);

    if (!quiet) {
        if (nfound == 0) {
            printf("No detection.\n\n");
        } else {
            for (int i = 0; i < nfound; i++)
                printf("[!!] Detected\n     Process Name: %s\n     PID         : %lu\n     Image Path  : %s\n",
                       found[i].name, found[i].pid, found[i].image);
            printf("%s\nEmotet was detected.\nPlease remove or isolate the suspicious execution file.\n\n", DELIM);
        }
        printf("Report has exported to following file.\n\n\t%s\n\nThank you for using our tool.\n\n", path);
        printf("Press any key to continue . . . ");
        fflush(stdout);
        getchar();
    }
    return 0;
}
