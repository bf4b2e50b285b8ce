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

use super::Aligned;
use std::arch::asm;
use std::cell::RefCell;
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
    /// `tdpbusd`.
    Int8,
}

/// Whether this CPU has AMX tiles with `products`, and the OS lets this process use them.
pub fn usable(products: Products) -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    // Read once: CPUID traps to the hypervisor in a virtual machine, and attention asks per
    // sequence.
    static FEATURES: OnceLock<u32> = OnceLock::new();
    // CPUID leaf 7: EDX bit 24 is AMX-TILE, bit 22 AMX-BF16, bit 25 AMX-INT8.
    let edx = *FEATURES.get_or_init(|| std::arch::x86_64::__cpuid_count(7, 0).edx);
    let tiles = edx & (1 << 24) != 0;
    let products = match products {
        Products::Bf16 => edx & (1 << 22) != 0,
        Products::Int8 => edx & (1 << 25) != 0,
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

thread_local! {
    static SCRATCH: RefCell<Aligned<u8>> = RefCell::new(Aligned::zeroed(0));
}

/// Runs `body` with this thread's 64-byte-aligned scratch of `len` bytes, whatever an earlier
/// call left in it: the rows a kernel rounds or quantises for its tiles. Reused, so a task
/// neither allocates nor zeroes memory (the caller writes every byte it reads, padding too).
pub fn with_scratch<R>(len: usize, body: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < len {
            *scratch = Aligned::zeroed(len);
        }
        body(&mut scratch[..len])
    })
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

/// One tile product, `tile C += tile A · tile B`, where A holds 16 rows of 64 bytes of inputs and
/// B 16 rows of 64 bytes of weights packed as the kernels pack them: for each group of
/// consecutive `k` (2 bf16 or 4 int8), 16 columns side by side.
pub trait Dot {
    /// # Safety
    /// Inside [`with_full_tiles`], and [`usable`] for this product.
    unsafe fn dot<const C: u8, const A: u8, const B: u8>();
}

/// A [`Dot`] whose product is the one instruction `$instruction`.
macro_rules! tile_product {
    ($(#[$doc:meta])* $name:ident, $instruction:literal) => {
        $(#[$doc])*
        pub struct $name;

        impl Dot for $name {
            #[inline(always)]
            unsafe fn dot<const C: u8, const A: u8, const B: u8>() {
                asm!(
                    concat!($instruction, " tmm{c}, tmm{a}, tmm{b}"),
                    c = const C,
                    a = const A,
                    b = const B,
                    options(nostack, nomem)
                );
            }
        }
    };
}

tile_product!(
    /// bf16 × bf16 → f32 (`tdpbf16ps`).
    Bf16,
    "tdpbf16ps"
);
tile_product!(
    /// u8 × i8 → i32 (`tdpbusd`).
    U8I8,
    "tdpbusd"
);

/// Bytes of one tile of packed weights: 16 rows of 64.
const WEIGHT_TILE: usize = TILE_ROWS * TILE_BYTES;

/// Sums 32 rows of inputs against one or two 16-column blocks of weights into tiles 0 and 2
/// (the left block; rows 0–15, 16–31) and 1 and 3 (the right one), over `steps` tiles of `k`.
/// Tiles 4 and 5 hold the inputs, 6 and 7 the weights: each weight tile is used twice, each
/// input tile twice when there is a right block.
///
/// # Safety
/// Inside [`with_full_tiles`] and [`usable`] for `D`. `inputs` points at 32 rows of
/// `steps × 64` readable bytes, `stride` apart; `left` (and `right`) at `steps` weight tiles.
#[inline(always)]
pub unsafe fn sum_32_rows<D: Dot>(
    inputs: *const u8,
    stride: usize,
    left: *const u8,
    right: Option<*const u8>,
    steps: usize,
) {
    let lower = inputs.add(TILE_ROWS * stride);
    zero::<0>();
    zero::<1>();
    zero::<2>();
    zero::<3>();
    for step in 0..steps {
        load::<4>(inputs.add(step * TILE_BYTES), stride);
        load::<5>(lower.add(step * TILE_BYTES), stride);
        load::<6>(left.add(step * WEIGHT_TILE), TILE_BYTES);
        D::dot::<0, 4, 6>();
        D::dot::<2, 5, 6>();
        if let Some(right) = right {
            load::<7>(right.add(step * WEIGHT_TILE), TILE_BYTES);
            D::dot::<1, 4, 7>();
            D::dot::<3, 5, 7>();
        }
    }
}

/// Stores tiles 0–3 of [`sum_32_rows`] as a 32 × `width` block of 4-byte sums at `to`
/// (`width` 16 for one block, 32 for two), rows `width` sums apart.
///
/// # Safety
/// Inside [`with_full_tiles`]; `to` has room for 32 × `width` sums.
pub unsafe fn store_32_rows(to: *mut u8, width: usize) {
    store_32_rows_strided(to, width, width);
}

/// [`store_32_rows`] with rows `row_length` sums apart.
///
/// # Safety
/// Inside [`with_full_tiles`]; `to` has room for 32 rows of `row_length` sums.
pub unsafe fn store_32_rows_strided(to: *mut u8, width: usize, row_length: usize) {
    let stride = row_length * 4;
    store::<0>(to, stride);
    store::<2>(to.add(TILE_ROWS * stride), stride);
    if width > 16 {
        store::<1>(to.add(TILE_BYTES), stride);
        store::<3>(to.add(TILE_ROWS * stride + TILE_BYTES), stride);
    }
}
