//! Kernels from `kernels/*.cu`, embedded in the binary and compiled with NVRTC for the GPU at hand.

use crate::cuda::device::{Gpu, Stream, ck};
use crate::cuda::libs;
use crate::error::{Error, Result};
use cudarc::driver::sys::{self, CUfunction, CUmodule};
use std::ffi::{CString, c_void};

/// A compiled module loaded into one GPU's primary context.
pub struct Module {
    pub raw: CUmodule,
    pub gpu: usize,
    pub name: &'static str,
}

/// Compile CUDA C source to PTX for compute capability `cc` (the driver JITs PTX to SASS at load).
pub fn compile(name: &'static str, src: &str, cc: (i32, i32)) -> Result<String> {
    libs::ensure_nvrtc()?;
    let arch: &'static str = Box::leak(format!("compute_{}{}", cc.0, cc.1).into_boxed_str());
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some(arch),
        options: vec!["--std=c++17".into(), "-default-device".into()],
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| Error::Nvrtc {
        kernel: name.to_string(),
        log: format!("{e:?}"),
    })?;
    Ok(ptx.to_src())
}

impl Module {
    pub fn load(gpu: &Gpu, name: &'static str, src: &str) -> Result<Module> {
        let ptx = compile(name, src, gpu.info.compute_capability)?;
        gpu.bind()?;
        let c = CString::new(ptx).map_err(|_| Error::Invalid("PTX contains a NUL byte".into()))?;
        let mut raw: CUmodule = std::ptr::null_mut();
        ck!(
            sys::cuModuleLoadData(&mut raw, c.as_ptr() as *const c_void),
            "cuModuleLoadData({name} on GPU {})",
            gpu.ordinal
        )?;
        Ok(Module {
            raw,
            gpu: gpu.ordinal,
            name,
        })
    }

    pub fn function(&self, fname: &str) -> Result<Kernel> {
        let c =
            CString::new(fname).map_err(|_| Error::Invalid(format!("bad kernel name {fname}")))?;
        let mut f: CUfunction = std::ptr::null_mut();
        ck!(
            sys::cuModuleGetFunction(&mut f, self.raw, c.as_ptr()),
            "cuModuleGetFunction({}::{fname})",
            self.name
        )?;
        Ok(Kernel {
            raw: f,
            name: format!("{}::{fname}", self.name),
            early_launch: false,
            dynamic_shared: 0,
        })
    }
}

/// One kernel. Arguments go as a slice of pointers to their values (the driver's convention).
#[derive(Clone)]
pub struct Kernel {
    pub raw: CUfunction,
    pub name: String,
    /// Launched as a programmatic dependent (sm_90+): it may be scheduled before the kernel
    /// ahead of it finishes, and must wait for it itself (kernels/llava.cu `after_predecessor`).
    pub early_launch: bool,
    /// Bytes of dynamic shared memory each block gets (`extern __shared__`), beyond its static
    /// shared memory; set with [`Kernel::set_dynamic_shared`].
    pub dynamic_shared: u32,
}

/// Wrap each argument's address for cuLaunchKernel.
#[macro_export]
macro_rules! kargs {
    ($($a:expr),* $(,)?) => {
        [$( &$a as *const _ as *mut ::std::ffi::c_void ),*]
    };
}

impl Kernel {
    /// Give each block `bytes` of dynamic shared memory from now on: past 48 KB a kernel must
    /// be allowed them (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) before its launch.
    pub fn set_dynamic_shared(&mut self, bytes: u32) -> Result<()> {
        ck!(
            sys::cuFuncSetAttribute(
                self.raw,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            ),
            "cuFuncSetAttribute({}, max dynamic shared memory {bytes} bytes)",
            self.name
        )?;
        self.dynamic_shared = bytes;
        Ok(())
    }

    /// How many blocks of `block` threads (with this kernel's dynamic shared memory) one SM
    /// holds at once: registers and shared memory decide it, as the driver computes.
    pub fn resident_blocks_per_sm(&self, block: u32) -> Result<u32> {
        let mut n = 0i32;
        ck!(
            sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(
                &mut n,
                self.raw,
                block as i32,
                self.dynamic_shared as usize,
            ),
            "cuOccupancyMaxActiveBlocksPerMultiprocessor({}, {block} threads)",
            self.name
        )?;
        Ok(n.max(0) as u32)
    }

    /// Launch on `s` with a 1-D grid.
    ///
    /// # Safety
    ///
    /// As for [`Kernel::launch3`].
    pub unsafe fn launch(
        &self,
        grid: u32,
        block: u32,
        s: &Stream,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        // SAFETY: the caller upholds launch3's contract; only the grid's shape differs.
        unsafe { self.launch3((grid, 1, 1), block, s, args) }
    }

    /// Launch on `s` with a 3-D grid.
    ///
    /// # Safety
    ///
    /// The driver cannot check a launch against the kernel's CUDA signature; the caller
    /// guarantees:
    /// * `args` has one pointer per kernel parameter, in order, each to a live value of exactly
    ///   the parameter's type (`u32` for `u32`, `u64` for a device pointer or `u64`, `f32` for
    ///   `float`, `i32` for `int`), as [`kargs!`](crate::kargs) builds it;
    /// * every device pointer among them belongs to `s`'s GPU and addresses memory large
    ///   enough for every element the kernel reads or writes with this grid and these sizes;
    /// * that memory stays allocated until the kernel has finished (the stream is synchronised
    ///   or later work on it is ordered after the kernel), and no other stream writes it
    ///   meanwhile unless ordered by events.
    pub unsafe fn launch3(
        &self,
        grid: (u32, u32, u32),
        block: u32,
        s: &Stream,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        crate::cuda::timeline::mark(s, || self.name.clone())?;
        let mut early = sys::CUlaunchAttribute {
            id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
            pad: [0; 4],
            value: sys::CUlaunchAttributeValue {
                programmaticStreamSerializationAllowed: 1,
            },
        };
        let config = sys::CUlaunchConfig {
            gridDimX: grid.0.max(1),
            gridDimY: grid.1.max(1),
            gridDimZ: grid.2.max(1),
            blockDimX: block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: self.dynamic_shared,
            hStream: s.raw,
            attrs: &mut early,
            numAttrs: self.early_launch as u32,
        };
        ck!(
            sys::cuLaunchKernelEx(&config, self.raw, args.as_mut_ptr(), std::ptr::null_mut()),
            "cuLaunchKernelEx({}, grid {grid:?}, block {block}, GPU {})",
            self.name,
            s.gpu
        )
    }
}

/// Grid size for a grid-stride kernel over `n` items: enough blocks to fill the GPU a few times
/// over, never more than the items need.
pub fn grid_for(n: u64, block: u32, sms: u32) -> u32 {
    let need = n.div_ceil(block as u64).max(1);
    need.min(sms as u64 * 8) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_bounded() {
        assert_eq!(grid_for(1, 256, 132), 1);
        assert_eq!(grid_for(256 * 10, 256, 132), 10);
        assert_eq!(grid_for(u64::MAX / 2, 256, 132), 132 * 8);
    }
}
