/* launch.exe: runs one cmd.exe command line inside the Wine prefix exactly as written.
 *
 * Why: a command line cannot cross from Linux argv into Windows untouched (Wine re-quotes
 * every argv element), and the lab must hand Wine's real `cmd /c` the byte-exact line a WinRM
 * client sent. The WinRM simulator puts the line into the environment variable
 * PUSHSCAN_LAB_CMDLINE (UTF-8 on the Linux side, UTF-16 here) and runs
 * `wine64 launch.exe`; this program calls CreateProcessW(NULL, "cmd.exe /c <line>") with the
 * inherited standard handles, waits, and ends with cmd's exit code. The full 32-bit code is
 * also written, as decimal text, to the file named by PUSHSCAN_LAB_EXITFILE (a Linux exit
 * status keeps only 8 bits; NTSTATUS codes such as 0xC000013A need all 32).
 *
 * cmd.exe runs in a job object with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE: when this launcher is
 * killed (the simulator's timeout / Signal terminate), wineserver closes the job handle and
 * terminates every Windows process of the command tree, as Windows' WinRM does. */
#include <windows.h>
#include <stdio.h>
#include <wchar.h>

int wmain(void)
{
    static WCHAR line[32768];
    static WCHAR full[32768 + 64];
    WCHAR exitfile[1024];
    DWORD n = GetEnvironmentVariableW(L"PUSHSCAN_LAB_CMDLINE", line, 32768);
    if (n == 0 || n >= 32768) {
        fwprintf(stderr, L"launch.exe: PUSHSCAN_LAB_CMDLINE missing or too long\r\n");
        return 255;
    }
    /* cmd.exe's own limit is 8191 characters; Windows refuses longer lines the same way. */
    _snwprintf(full, sizeof full / sizeof full[0], L"C:\\windows\\system32\\cmd.exe /c %ls", line);
    full[sizeof full / sizeof full[0] - 1] = 0;
    /* The variables are ours, not the command's. */
    DWORD e = GetEnvironmentVariableW(L"PUSHSCAN_LAB_EXITFILE", exitfile, 1024);
    SetEnvironmentVariableW(L"PUSHSCAN_LAB_CMDLINE", NULL);
    SetEnvironmentVariableW(L"PUSHSCAN_LAB_EXITFILE", NULL);

    HANDLE job = CreateJobObjectW(NULL, NULL);
    if (job) {
        JOBOBJECT_EXTENDED_LIMIT_INFORMATION info;
        ZeroMemory(&info, sizeof info);
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        SetInformationJobObject(job, JobObjectExtendedLimitInformation, &info, sizeof info);
    }
    STARTUPINFOW si;
    PROCESS_INFORMATION pi;
    ZeroMemory(&si, sizeof si);
    si.cb = sizeof si;
    si.dwFlags = STARTF_USESTDHANDLES;
    si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
    si.hStdOutput = GetStdHandle(STD_OUTPUT_HANDLE);
    si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
    if (!CreateProcessW(NULL, full, NULL, NULL, TRUE, CREATE_SUSPENDED, NULL, NULL, &si, &pi)) {
        fwprintf(stderr, L"launch.exe: cannot start cmd.exe (error %lu)\r\n", GetLastError());
        return 255;
    }
    if (job)
        AssignProcessToJobObject(job, pi.hProcess);
    ResumeThread(pi.hThread);
    CloseHandle(pi.hThread);
    WaitForSingleObject(pi.hProcess, INFINITE);
    DWORD code = 1;
    GetExitCodeProcess(pi.hProcess, &code);
    if (e > 0 && e < 1024) {
        HANDLE f = CreateFileW(exitfile, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, NULL);
        if (f != INVALID_HANDLE_VALUE) {
            char text[16];
            int len = snprintf(text, sizeof text, "%lu", (unsigned long)code);
            DWORD written;
            WriteFile(f, text, (DWORD)len, &written, NULL);
            CloseHandle(f);
        }
    }
    return (int)code;
}
