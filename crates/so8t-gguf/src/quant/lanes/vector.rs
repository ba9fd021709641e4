//! Eight f32 lanes: a portable array form and an AVX2 form, with the handful of operations the
//! scale searches use. Every operation is the IEEE operation of one lane (no fused
//! multiply-add, compares that are false on NaN like Rust's `<`), so both forms give the scalar
//! code's bits.

/// Eight f32 lanes.
pub(crate) trait Lanes8: Copy {
    /// A lane mask.
    type Mask: Copy;
    /// `v` in every lane.
    fn splat(v: f32) -> Self;
    /// The lanes of `a`.
    fn load(a: &[f32; 8]) -> Self;
    /// The lanes as an array.
    fn store(self) -> [f32; 8];
    /// `self + o`.
    fn add(self, o: Self) -> Self;
    /// `self - o`.
    fn sub(self, o: Self) -> Self;
    /// `self * o`.
    fn mul(self, o: Self) -> Self;
    /// `self / o`.
    fn div(self, o: Self) -> Self;
    /// `self.sqrt()`.
    fn sqrt(self) -> Self;
    /// `self.abs()`.
    fn abs(self) -> Self;
    /// `self < o`.
    fn lt(self, o: Self) -> Self::Mask;
    /// `self > o`.
    fn gt(self, o: Self) -> Self::Mask;
    /// `self == o`.
    fn eq(self, o: Self) -> Self::Mask;
    /// Both masks.
    fn and(a: Self::Mask, b: Self::Mask) -> Self::Mask;
    /// `if m { a } else { b }` per lane.
    fn select(m: Self::Mask, a: Self, b: Self) -> Self;
    /// ggml's `nearest_int(v)` clamped to `lo..=hi`, as f32.
    fn round_clamp(self, lo: i32, hi: i32) -> Self;
}

/// The portable form (the compiler vectorizes what it can).
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; 8]);

impl Portable {
    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) -> Self {
        Self(self.0.map(f))
    }

    #[inline(always)]
    fn zip(self, o: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        Self(std::array::from_fn(|j| f(self.0[j], o.0[j])))
    }

    #[inline(always)]
    fn test(self, o: Self, f: impl Fn(f32, f32) -> bool) -> [bool; 8] {
        std::array::from_fn(|j| f(self.0[j], o.0[j]))
    }
}

impl Lanes8 for Portable {
    type Mask = [bool; 8];
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Self([v; 8])
    }
    #[inline(always)]
    fn load(a: &[f32; 8]) -> Self {
        Self(*a)
    }
    #[inline(always)]
    fn store(self) -> [f32; 8] {
        self.0
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.zip(o, |a, b| a + b)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self.zip(o, |a, b| a - b)
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self.zip(o, |a, b| a * b)
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        self.zip(o, |a, b| a / b)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        self.map(f32::sqrt)
    }
    #[inline(always)]
    fn abs(self) -> Self {
        self.map(f32::abs)
    }
    #[inline(always)]
    fn lt(self, o: Self) -> [bool; 8] {
        self.test(o, |a, b| a < b)
    }
    #[inline(always)]
    fn gt(self, o: Self) -> [bool; 8] {
        self.test(o, |a, b| a > b)
    }
    #[inline(always)]
    fn eq(self, o: Self) -> [bool; 8] {
        self.test(o, |a, b| a == b)
    }
    #[inline(always)]
    fn and(a: [bool; 8], b: [bool; 8]) -> [bool; 8] {
        std::array::from_fn(|j| a[j] && b[j])
    }
    #[inline(always)]
    fn select(m: [bool; 8], a: Self, b: Self) -> Self {
        Self(std::array::from_fn(|j| if m[j] { a.0[j] } else { b.0[j] }))
    }
    #[inline(always)]
    fn round_clamp(self, lo: i32, hi: i32) -> Self {
        self.map(|v| super::super::kquants::nearest_int(v).clamp(lo, hi) as f32)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Lanes8;

    /// The AVX2 form. Only to be used in code compiled with AVX2 enabled, reached after
    /// checking that the CPU has it (`avx2_dispatch!`): its operations are AVX2 instructions.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256);

    // SAFETY (every `unsafe` below): the intrinsics need AVX/AVX2, which the type's contract
    // guarantees; loads and stores go through references to eight f32.
    impl Lanes8 for Avx2 {
        type Mask = __m256;
        #[inline(always)]
        fn splat(v: f32) -> Self {
            Self(unsafe { _mm256_set1_ps(v) })
        }
        #[inline(always)]
        fn load(a: &[f32; 8]) -> Self {
            Self(unsafe { _mm256_loadu_ps(a.as_ptr()) })
        }
        #[inline(always)]
        fn store(self) -> [f32; 8] {
            let mut a = [0.0f32; 8];
            unsafe { _mm256_storeu_ps(a.as_mut_ptr(), self.0) };
            a
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            Self(unsafe { _mm256_add_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            Self(unsafe { _mm256_sub_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            Self(unsafe { _mm256_mul_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            Self(unsafe { _mm256_div_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn sqrt(self) -> Self {
            Self(unsafe { _mm256_sqrt_ps(self.0) })
        }
        #[inline(always)]
        fn abs(self) -> Self {
            Self(unsafe { _mm256_and_ps(self.0, _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX))) })
        }
        #[inline(always)]
        fn lt(self, o: Self) -> __m256 {
            unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, o.0) }
        }
        #[inline(always)]
        fn gt(self, o: Self) -> __m256 {
            unsafe { _mm256_cmp_ps::<_CMP_GT_OQ>(self.0, o.0) }
        }
        #[inline(always)]
        fn eq(self, o: Self) -> __m256 {
            unsafe { _mm256_cmp_ps::<_CMP_EQ_OQ>(self.0, o.0) }
        }
        #[inline(always)]
        fn and(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_and_ps(a, b) }
        }
        #[inline(always)]
        fn select(m: __m256, a: Self, b: Self) -> Self {
            Self(unsafe { _mm256_blendv_ps(b.0, a.0, m) })
        }
        #[inline(always)]
        fn round_clamp(self, lo: i32, hi: i32) -> Self {
            unsafe {
                let t = _mm256_castps_si256(_mm256_add_ps(self.0, _mm256_set1_ps(12_582_912.0)));
                let i = _mm256_sub_epi32(
                    _mm256_and_si256(t, _mm256_set1_epi32(0x007f_ffff)),
                    _mm256_set1_epi32(0x0040_0000),
                );
                let i = _mm256_min_epi32(
                    _mm256_max_epi32(i, _mm256_set1_epi32(lo)),
                    _mm256_set1_epi32(hi),
                );
                Self(_mm256_cvtepi32_ps(i))
            }
        }
    }
}
