/* pipetool: a small Windows program for scripts/windows-test.sh, built with
 * mingw-w64 and run under Wine next to ce-authd.exe.
 *
 *   pipetool squat NAME LOG   create \\.\pipe\NAME first, open to everyone (a
 *                             NULL DACL), as a squatter would, and append
 *                             whatever clients send to LOG; runs until killed
 *   pipetool client NAME      a second, independent pipe client: send hello
 *                             and token as raw protocol lines, print replies
 *   pipetool sddl NAME        print the pipe's owner and DACL as SDDL
 *   pipetool vmread PID       try to open process PID for reading its memory,
 *                             as another process of the same user would;
 *                             exit 0 if that worked, 3 if access was denied
 *
 * Exit status 0 on success, 1 on failure (with a message on stderr).
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <sddl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

static void pipe_path(wchar_t *out, size_t n, const char *name) {
    swprintf(out, n, L"\\\\.\\pipe\\%hs", name);
}

static int fail(const char *what) {
    fprintf(stderr, "pipetool: %s: error %lu\n", what, (unsigned long)GetLastError());
    return 1;
}

static int squat(const char *name, const char *log) {
    wchar_t path[512];
    pipe_path(path, 512, name);
    SECURITY_DESCRIPTOR sd;
    InitializeSecurityDescriptor(&sd, SECURITY_DESCRIPTOR_REVISION);
    SetSecurityDescriptorDacl(&sd, TRUE, NULL, FALSE); /* everyone, everything */
    SECURITY_ATTRIBUTES sa = {sizeof sa, &sd, FALSE};
    for (;;) {
        HANDLE h = CreateNamedPipeW(path, PIPE_ACCESS_DUPLEX,
                                    PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT,
                                    PIPE_UNLIMITED_INSTANCES, 65536, 65536, 0, &sa);
        if (h == INVALID_HANDLE_VALUE) return fail("CreateNamedPipeW");
        printf("squatting %ls\n", path);
        fflush(stdout);
        if (!ConnectNamedPipe(h, NULL) && GetLastError() != ERROR_PIPE_CONNECTED) {
            CloseHandle(h);
            continue;
        }
        char buf[4096];
        DWORD got;
        while (ReadFile(h, buf, sizeof buf, &got, NULL) && got > 0) {
            FILE *f = fopen(log, "ab");
            if (f) {
                fwrite(buf, 1, got, f);
                fclose(f);
            }
        }
        DisconnectNamedPipe(h);
        CloseHandle(h);
    }
}

static int client(const char *name) {
    wchar_t path[512];
    pipe_path(path, 512, name);
    HANDLE h = INVALID_HANDLE_VALUE;
    for (int i = 0; i < 50 && h == INVALID_HANDLE_VALUE; i++) {
        h = CreateFileW(path, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0, NULL);
        if (h == INVALID_HANDLE_VALUE && GetLastError() == ERROR_PIPE_BUSY) WaitNamedPipeW(path, 200);
        else if (h == INVALID_HANDLE_VALUE) return fail("CreateFileW");
    }
    if (h == INVALID_HANDLE_VALUE) return fail("CreateFileW (busy)");
    const char *req = "{\"op\":\"hello\",\"version\":1,\"client\":\"pipetool\"}\n{\"op\":\"token\"}\n";
    DWORD put;
    if (!WriteFile(h, req, (DWORD)strlen(req), &put, NULL)) return fail("WriteFile");
    /* two reply lines */
    char buf[65536];
    DWORD len = 0, got;
    int lines = 0;
    while (lines < 2 && len < sizeof buf - 1 && ReadFile(h, buf + len, sizeof buf - 1 - len, &got, NULL) && got > 0) {
        for (DWORD i = len; i < len + got; i++) lines += buf[i] == '\n';
        len += got;
    }
    buf[len] = 0;
    fputs(buf, stdout);
    CloseHandle(h);
    return lines == 2 ? 0 : 1;
}

static int sddl(const char *name) {
    wchar_t path[512];
    pipe_path(path, 512, name);
    HANDLE h = CreateFileW(path, READ_CONTROL | GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) return fail("CreateFileW");
    DWORD need = 0;
    GetKernelObjectSecurity(h, OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION, NULL, 0, &need);
    if (!need) return fail("GetKernelObjectSecurity (size)");
    PSECURITY_DESCRIPTOR sd = LocalAlloc(LPTR, need);
    if (!GetKernelObjectSecurity(h, OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION, sd, need, &need))
        return fail("GetKernelObjectSecurity");
    LPWSTR text = NULL;
    if (!ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd, SDDL_REVISION_1, OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION, &text, NULL))
        return fail("ConvertSecurityDescriptorToStringSecurityDescriptorW");
    printf("%ls\n", text);
    LocalFree(text);
    LocalFree(sd);
    CloseHandle(h);
    return 0;
}

static int vmread(const char *pid) {
    DWORD id = (DWORD)strtoul(pid, NULL, 10);
    HANDLE h = OpenProcess(PROCESS_VM_READ | PROCESS_QUERY_INFORMATION, FALSE, id);
    if (h) {
        printf("opened process %lu for reading its memory\n", (unsigned long)id);
        CloseHandle(h);
        return 0;
    }
    DWORD e = GetLastError();
    printf("OpenProcess(PROCESS_VM_READ) on %lu: error %lu\n", (unsigned long)id, (unsigned long)e);
    return e == ERROR_ACCESS_DENIED ? 3 : 1;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "squat")) return squat(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "client")) return client(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "sddl")) return sddl(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "vmread")) return vmread(argv[2]);
    fprintf(stderr, "usage: pipetool squat NAME LOG | client NAME | sddl NAME | vmread PID\n");
    return 2;
}
