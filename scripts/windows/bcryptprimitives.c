/* bcryptprimitives.dll for Wine 8 (Debian 12), which lacks it: Rust's std
 * (1.78 and later) draws its random seeds from ProcessPrng there, so every
 * Rust program fails to load without it (status c0000135). Wine 9 ships the
 * real one; this stub only makes older Wine usable for scripts/windows-test.sh
 * and is installed into the test's own Wine prefix, never shipped. */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

/* RtlGenRandom, exported by advapi32 under this name */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
