//! Gives back the pages of kedge's own code and read-only data that only start-up used.
//!
//! One binary serves the cloud and the edge, and starting an edge (arguments, configuration,
//! TLS set-up, the store's schema, the broker) runs code that an idle edge never runs again.
//! Those pages stay mapped, and counted in its memory, until the kernel needs them back: 9 of
//! an idle edge's 15 MiB. Once the edge is up, `MADV_PAGEOUT` on this executable's read-only
//! mappings drops them from the process (they are clean page-cache pages: nothing is lost, and
//! a page used again is mapped back in from the page cache, or read from disk). What the idle
//! edge keeps using comes back within a moment: 2–5 MiB of code (docs/performance.md).

use std::io;

/// This executable's read-only mappings in `maps` (`/proc/self/maps`): (start, length).
pub fn readonly_mappings(maps: &str, exe: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let path = f.nth(3)?;
            if path != exe || perms.contains('w') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let (a, b) = (
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            );
            (b > a).then_some((a, b - a))
        })
        .collect()
}

/// Pages out this executable's read-only mappings; returns how many bytes were advised.
pub fn startup_pages() -> io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut advised = 0;
    for (start, len) in readonly_mappings(&maps, &exe.to_string_lossy()) {
        page_out(start, len)?;
        advised += len;
    }
    Ok(advised)
}

#[allow(unsafe_code)]
fn page_out(start: usize, len: usize) -> io::Result<()> {
    // MADV_RANDOM first: a page touched again after the page-out is then read alone, not with
    // its neighbours (readahead puts a whole large folio in the page cache, and a fault maps all
    // of it: 64 KiB or more back in the process per hot 4 KiB page of code).
    for advice in [rustix::mm::Advice::Random, rustix::mm::Advice::LinuxPageOut] {
        // SAFETY: the range is one of this executable's own mappings, read-only and file-backed
        // (the kernel's list of them). MADV_RANDOM only changes how it is read ahead;
        // MADV_PAGEOUT only drops its clean pages from this process's page tables. The memory's
        // contents do not change, and a page is mapped in again, with the same contents, when
        // next touched. No Rust object is created, moved or freed.
        unsafe { rustix::mm::madvise(start as *mut std::ffi::c_void, len, advice) }
            .map_err(io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_read_only_mappings() {
        let maps = "\
5580a0000000-5580a0100000 r--p 00000000 fe:01 123 /usr/bin/kedge
5580a0100000-5580a1000000 r-xp 00100000 fe:01 123 /usr/bin/kedge
5580a1000000-5580a1010000 rw-p 01000000 fe:01 123 /usr/bin/kedge
7f0000000000-7f0000100000 r-xp 00000000 fe:01 456 /usr/lib/libc.so.6
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
7ffd0000000-7ffd0001000 r--p 00000000 00:00 0 [vvar]
";
        assert_eq!(
            readonly_mappings(maps, "/usr/bin/kedge"),
            [(0x5580a0000000, 0x100000), (0x5580a0100000, 0xf00000)]
        );
        assert!(readonly_mappings("garbage\n\n", "/usr/bin/kedge").is_empty());
    }

    #[test]
    fn paging_out_this_test_binary_leaves_it_working() {
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let maps = || std::fs::read_to_string("/proc/self/maps").expect("maps");
        let before = readonly_mappings(&maps(), &exe.to_string_lossy());
        match startup_pages() {
            Ok(n) => assert!(n > 0, "the test binary has read-only mappings"),
            // Kernels before 5.4 lack MADV_PAGEOUT.
            Err(e) => assert_eq!(
                e.raw_os_error(),
                Some(rustix::io::Errno::INVAL.raw_os_error())
            ),
        }
        // Its code and data, paged out, come back as they were.
        assert_eq!(readonly_mappings(&maps(), &exe.to_string_lossy()), before);
    }
}
