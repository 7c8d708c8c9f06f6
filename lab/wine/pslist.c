/* pslist.exe: every process of this Wine prefix's wineserver, one line each:
 * `<PID>\t<full image path>` (CRLF), PIDs as Windows (wineserver) numbers them.
 *
 * Why: Wine's tasklist is a stub that prints nothing. The lab answers the Windows process
 * check (PowerShell Get-CimInstance Win32_Process) and `wine-inspect` from this listing:
 * Toolhelp32 for the PIDs, QueryFullProcessImageNameW for the path (Toolhelp32's szExeFile is
 * the file name only). A process whose path cannot be read prints `<PID>\t` and its name.
 * pslist.exe leaves itself out. Output is UTF-8. */
#include <windows.h>
#include <tlhelp32.h>
#include <stdio.h>

static void put_utf8(const WCHAR *w)
{
    char buf[4 * MAX_PATH * 4];
    int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, buf, sizeof buf, NULL, NULL);
    if (n > 0)
        fputs(buf, stdout);
}

int main(void)
{
    HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
    if (snap == INVALID_HANDLE_VALUE) {
        fprintf(stderr, "pslist: CreateToolhelp32Snapshot failed (error %lu)\r\n", GetLastError());
        return 1;
    }
    PROCESSENTRY32W pe;
    pe.dwSize = sizeof pe;
    DWORD self = GetCurrentProcessId();
    if (Process32FirstW(snap, &pe)) {
        do {
            if (pe.th32ProcessID == self)
                continue;
            WCHAR path[32768];
            DWORD len = 32768;
            HANDLE h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pe.th32ProcessID);
            printf("%lu\t", (unsigned long)pe.th32ProcessID);
            if (h && QueryFullProcessImageNameW(h, 0, path, &len))
                put_utf8(path);
            else
                put_utf8(pe.szExeFile);
            fputs("\r\n", stdout);
            if (h)
                CloseHandle(h);
        } while (Process32NextW(snap, &pe));
    }
    CloseHandle(snap);
    return 0;
}
