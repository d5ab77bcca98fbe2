//! The Windows side of the platform split, in one place: who a process runs
//! as (SIDs from access tokens), the named pipe's name and security
//! descriptor, the check of the process at the other end of a pipe, file
//! ACLs for secrets, and the std handles a detached child must not inherit.
//!
//! [`sid`] and [`acl`] hold the rules as pure code (tested on every
//! platform); the rest is the system calls, compiled on Windows only.

#[cfg(any(windows, test))]
pub(crate) mod acl;
#[cfg(any(windows, test))]
pub(crate) mod sid;

#[cfg(windows)]
pub(crate) use imp::*;

#[cfg(windows)]
mod imp {
    use std::io;
    use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
    use std::sync::OnceLock;

    use windows_sys::Win32::Foundation::{
        HANDLE, HANDLE_FLAG_INHERIT, LocalFree, SetHandleInformation,
    };
    use windows_sys::Win32::Security::{
        GetLengthSid, GetTokenInformation, TOKEN_QUERY, TOKEN_USER, TokenUser,
    };
    use windows_sys::Win32::System::Console::{
        GetStdHandle, STD_ERROR_HANDLE, STD_INPUT_HANDLE, STD_OUTPUT_HANDLE,
    };
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
    };

    use super::sid::Sid;

    /// The user this process runs as (its token's `TokenUser`), looked up once.
    pub(crate) fn current_user() -> io::Result<Sid> {
        static OWN: OnceLock<Sid> = OnceLock::new();
        if let Some(s) = OWN.get() {
            return Ok(s.clone());
        }
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: the pseudo-handle of this process needs no closing; `token` is an out pointer.
        if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: OpenProcessToken succeeded, so `token` is a handle we own.
        let token = unsafe { OwnedHandle::from_raw_handle(token) };
        let sid = token_user(&token)?;
        Ok(OWN.get_or_init(|| sid).clone())
    }

    /// The user process `pid` runs as. Fails when the process is gone or its
    /// token may not be read (another user's process usually may not be
    /// opened at all): callers treat failure as "not ours".
    pub(crate) fn process_user(pid: u32) -> io::Result<Sid> {
        // SAFETY: plain call; a null result is checked.
        let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        if process.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: OpenProcess succeeded, so `process` is a handle we own.
        let process = unsafe { OwnedHandle::from_raw_handle(process) };
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: `process` is a valid process handle; `token` is an out pointer.
        if unsafe { OpenProcessToken(process.as_raw_handle(), TOKEN_QUERY, &mut token) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: OpenProcessToken succeeded, so `token` is a handle we own.
        let token = unsafe { OwnedHandle::from_raw_handle(token) };
        token_user(&token)
    }

    /// The `TokenUser` SID of an access token.
    fn token_user(token: &OwnedHandle) -> io::Result<Sid> {
        let mut len = 0u32;
        // SAFETY: a size query: no buffer, `len` is an out pointer.
        unsafe {
            GetTokenInformation(
                token.as_raw_handle(),
                TokenUser,
                std::ptr::null_mut(),
                0,
                &mut len,
            )
        };
        if len == 0 {
            return Err(io::Error::last_os_error());
        }
        // u64 words keep the buffer aligned for TOKEN_USER
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        // SAFETY: `buf` has at least `len` writable bytes.
        let ok = unsafe {
            GetTokenInformation(
                token.as_raw_handle(),
                TokenUser,
                buf.as_mut_ptr().cast(),
                len,
                &mut len,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: GetTokenInformation filled `buf` with a TOKEN_USER whose SID
        // pointer points into `buf`, which is still alive.
        unsafe {
            let user = &*buf.as_ptr().cast::<TOKEN_USER>();
            sid_from_ptr(user.User.Sid)
        }
    }

    /// Copies the SID at `p`.
    ///
    /// # Safety
    /// `p` points to a valid SID.
    pub(crate) unsafe fn sid_from_ptr(p: *mut core::ffi::c_void) -> io::Result<Sid> {
        if p.is_null() {
            return Err(io::Error::other("no SID"));
        }
        // SAFETY: the caller passes a valid SID, of GetLengthSid bytes.
        let bytes = unsafe {
            let len = GetLengthSid(p) as usize;
            std::slice::from_raw_parts(p.cast::<u8>(), len)
        };
        Sid::from_bytes(bytes).ok_or_else(|| io::Error::other("malformed SID"))
    }

    /// Makes this process's standard handles non-inheritable, so a
    /// long-lived child started next inherits none of them except those it is
    /// explicitly given (std duplicates those as inheritable). Without this a
    /// detached daemon keeps its starter's stdout open, and `$(ce-auth token)`
    /// would wait for the daemon to exit.
    pub(crate) fn stop_std_handle_inheritance() {
        for which in [STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE] {
            // SAFETY: plain calls; an invalid or null handle only makes the second fail.
            unsafe {
                let h = GetStdHandle(which);
                if !h.is_null() && h != windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE {
                    SetHandleInformation(h, HANDLE_FLAG_INHERIT, 0);
                }
            }
        }
    }

    /// Whether [`restrict_process_access`] took effect.
    #[cfg(feature = "daemon")]
    static RESTRICTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// The Windows counterpart of `PR_SET_DUMPABLE` 0: replaces this
    /// process's DACL by a protected one that lets the user (and the owner,
    /// through `OWNER RIGHTS`, which also takes away the owner's implicit
    /// `WRITE_DAC`) only query, wait for and terminate it, and SYSTEM
    /// everything. Other processes of the user can then no longer read or
    /// write its memory, inject a thread or duplicate its handles; clients
    /// can still look up its user (`PROCESS_QUERY_LIMITED_INFORMATION`).
    /// Administrators holding `SeDebugPrivilege` are not stopped (as root
    /// is not on Unix).
    #[cfg(feature = "daemon")]
    pub(crate) fn restrict_process_access() -> io::Result<()> {
        use windows_sys::Win32::Security::Authorization::{SE_KERNEL_OBJECT, SetSecurityInfo};
        use windows_sys::Win32::Security::{
            ACL, DACL_SECURITY_INFORMATION, GetSecurityDescriptorDacl,
            PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR,
        };
        // PROCESS_TERMINATE | PROCESS_QUERY_LIMITED_INFORMATION | SYNCHRONIZE
        const USER_RIGHTS: u32 = 0x0000_0001 | 0x0000_1000 | 0x0010_0000;
        let own = current_user()?;
        let _sd = descriptor_from_sddl(&format!(
            "D:P(A;;{USER_RIGHTS:#x};;;{own})(A;;{USER_RIGHTS:#x};;;OW)(A;;GA;;;SY)"
        ))?;
        let sd: PSECURITY_DESCRIPTOR = _sd.0;
        let (mut present, mut defaulted) = (0, 0);
        let mut dacl: *mut ACL = std::ptr::null_mut();
        // SAFETY: `sd` is the descriptor made above; the DACL points into it.
        if unsafe { GetSecurityDescriptorDacl(sd, &mut present, &mut dacl, &mut defaulted) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the pseudo-handle of this process carries all access; `dacl`
        // is valid while `_sd` lives.
        let err = unsafe {
            SetSecurityInfo(
                GetCurrentProcess(),
                SE_KERNEL_OBJECT,
                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                dacl,
                std::ptr::null(),
            )
        };
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err as i32));
        }
        RESTRICTED.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Whether this process's memory is open to the user's other processes:
    /// false once [`restrict_process_access`] succeeded.
    #[cfg(feature = "daemon")]
    pub(crate) fn process_memory_open() -> bool {
        !RESTRICTED.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Frees memory the system allocated with `LocalAlloc` for us.
    pub(crate) struct LocalBox(pub(crate) *mut core::ffi::c_void);

    impl Drop for LocalBox {
        fn drop(&mut self) {
            if !self.0.is_null() {
                // SAFETY: the pointer came from a system call that hands out LocalAlloc memory.
                unsafe { LocalFree(self.0) };
            }
        }
    }

    /// The security descriptor written in SDDL, in memory the system
    /// allocated (freed when the box goes).
    pub(crate) fn descriptor_from_sddl(sddl: &str) -> io::Result<LocalBox> {
        use windows_sys::Win32::Security::Authorization::{
            ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
        };
        use windows_sys::Win32::Security::PSECURITY_DESCRIPTOR;
        let sddl = wide(sddl);
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `sddl` is NUL-terminated; `sd` receives LocalAlloc memory freed by LocalBox.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LocalBox(sd))
    }

    /// A NUL-terminated UTF-16 copy of `s`.
    pub(crate) fn wide(s: &str) -> Vec<u16> {
        s.encode_utf16().chain(std::iter::once(0)).collect()
    }
}
