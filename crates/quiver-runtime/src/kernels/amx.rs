//! Intel AMX (Advanced Matrix Extensions): eight tile registers of up to 16 rows × 64 bytes, and
//! one instruction that multiplies two of them into a third, a 16 × 16 block of f32 (or i32)
//! sums over 32 bf16 (or 64 int8) products each: 16,384 multiply-adds per instruction, eight
//! times what AVX-512 BF16 `vdpbf16ps` does per cycle.
//!
//! Why inline assembly: Rust's AMX intrinsics are not stable. The tile registers are never used
//! by compiled code, so their contents survive between `asm!` blocks, and each block can be one
//! instruction.
//!
//! Linux gives a process the tile registers only when asked (`arch_prctl(ARCH_REQ_XCOMP_PERM)`,
//! kernel 5.16 and later); [`usable`] asks once, and without it no AMX kernel is offered.

use std::arch::asm;
use std::sync::OnceLock;

/// Rows of a tile, and of one input or output block of a product.
pub const TILE_ROWS: usize = 16;
/// Bytes in one row of a tile.
pub const TILE_BYTES: usize = 64;

/// Which AMX product a kernel needs, beside the tile registers themselves.
#[derive(Debug, Clone, Copy)]
pub enum Products {
    /// `tdpbf16ps`.
    Bf16,
}

/// Whether this CPU has AMX tiles with `products`, and the OS lets this process use them.
pub fn usable(products: Products) -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    // CPUID leaf 7: EDX bit 24 is AMX-TILE, bit 22 AMX-BF16.
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    let tiles = edx & (1 << 24) != 0;
    let products = match products {
        Products::Bf16 => edx & (1 << 22) != 0,
    };
    tiles && products && *PERMITTED.get_or_init(request_permission)
}

#[cfg(target_os = "linux")]
fn request_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes which register state this process
    // may use; it reads and writes no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn request_permission() -> bool {
    false
}

/// The 64-byte tile configuration `ldtilecfg` reads: palette 1, then each tile's bytes per row
/// and rows. Palette 1 has eight tiles; the fields of the other eight must stay zero.
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// Runs `body` with all eight tiles configured as full 16 × 64-byte tiles, then releases them
/// (so that a context switch of this thread saves no tile state).
///
/// # Safety
/// [`usable`] returned true for the products `body` runs.
pub unsafe fn with_full_tiles<T>(body: impl FnOnce() -> T) -> T {
    let config = Config {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: std::array::from_fn(|t| if t < 8 { TILE_BYTES as u16 } else { 0 }),
        rows: std::array::from_fn(|t| if t < 8 { TILE_ROWS as u8 } else { 0 }),
    };
    asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly));
    let result = body();
    asm!("tilerelease", options(nostack, nomem));
    result
}

/// Tile `T` ← zeros.
///
/// # Safety
/// Inside [`with_full_tiles`].
#[inline(always)]
pub unsafe fn zero<const T: u8>() {
    asm!("tilezero tmm{t}", t = const T, options(nostack, nomem));
}

/// Tile `T` ← 16 rows of 64 bytes from `from`, `stride` bytes apart.
///
/// # Safety
/// Inside [`with_full_tiles`]; the 16 rows are readable.
#[inline(always)]
pub unsafe fn load<const T: u8>(from: *const u8, stride: usize) {
    asm!(
        "tileloadd tmm{t}, [{from} + {stride}*1]",
        t = const T,
        from = in(reg) from,
        stride = in(reg) stride,
        options(nostack, readonly)
    );
}

/// 16 rows of 64 bytes at `to`, `stride` bytes apart ← tile `T`.
///
/// # Safety
/// Inside [`with_full_tiles`]; the 16 rows are writable.
#[inline(always)]
pub unsafe fn store<const T: u8>(to: *mut u8, stride: usize) {
    asm!(
        "tilestored [{to} + {stride}*1], tmm{t}",
        t = const T,
        to = in(reg) to,
        stride = in(reg) stride,
        options(nostack)
    );
}

/// Tile `C` += tile `A` (16 rows × 32 bf16) · tile `B` (16 pairs of rows × 16 columns × 2 bf16),
/// in f32.
///
/// # Safety
/// Inside [`with_full_tiles`], and [`usable`]`(Products::Bf16)`.
#[inline(always)]
pub unsafe fn dot_bf16<const C: u8, const A: u8, const B: u8>() {
    asm!(
        "tdpbf16ps tmm{c}, tmm{a}, tmm{b}",
        c = const C,
        a = const A,
        b = const B,
        options(nostack, nomem)
    );
}
