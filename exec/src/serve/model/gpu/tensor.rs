//! bf16 tensors on the GPU and the host ↔ device copies of the model's inputs and outputs.

use crate::cuda::device::{DeviceBuffer, Gpu};
use crate::error::Result;
use crate::serve::model::host::{bf16_to_f32, f32_to_bf16};

/// A bf16 tensor on the GPU.
pub struct DTensor {
    pub buf: DeviceBuffer,
    pub shape: Vec<usize>,
}

impl DTensor {
    pub fn ptr(&self) -> u64 {
        self.buf.ptr
    }
    pub fn elems(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Reads back a device buffer of bf16 as f32.
pub fn download_bf16(b: &DeviceBuffer, elems: usize) -> Result<Vec<f32>> {
    let mut raw = vec![0u8; elems * 2];
    b.copy_to_host(&mut raw)?;
    Ok(raw
        .chunks_exact(2)
        .map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
        .collect())
}

pub fn download_f32(b: &DeviceBuffer, elems: usize) -> Result<Vec<f32>> {
    let mut raw = vec![0u8; elems * 4];
    b.copy_to_host(&mut raw)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

pub fn download_i32(b: &DeviceBuffer, n: usize) -> Result<Vec<i32>> {
    let mut raw = vec![0u8; n * 4];
    b.copy_to_host(&mut raw)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Copy `dst.len()` bytes from device address `ptr` (synchronous).
pub fn read_ptr(gpu: &Gpu, ptr: u64, dst: &mut [u8]) -> Result<()> {
    gpu.bind()?;
    crate::cuda::device::ck!(
        cudarc::driver::sys::cuMemcpyDtoH_v2(
            dst.as_mut_ptr() as *mut std::ffi::c_void,
            ptr,
            dst.len()
        ),
        "cuMemcpyDtoH({} bytes)",
        dst.len()
    )
}

pub fn upload_bf16(gpu: &Gpu, v: &[f32]) -> Result<DeviceBuffer> {
    let b = gpu.alloc(v.len() * 2)?;
    let raw: Vec<u8> = v
        .iter()
        .flat_map(|x| f32_to_bf16(*x).to_le_bytes())
        .collect();
    b.copy_from_host(&raw)?;
    Ok(b)
}

pub fn upload_i32(gpu: &Gpu, v: &[i32]) -> Result<DeviceBuffer> {
    let b = gpu.alloc(v.len().max(1) * 4)?;
    let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    b.copy_from_host(&raw)?;
    Ok(b)
}

pub fn upload_f32(gpu: &Gpu, v: &[f32]) -> Result<DeviceBuffer> {
    let b = gpu.alloc(v.len().max(1) * 4)?;
    let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    b.copy_from_host(&raw)?;
    Ok(b)
}

pub fn upload_f64(gpu: &Gpu, v: &[f64]) -> Result<DeviceBuffer> {
    let b = gpu.alloc(v.len().max(1) * 8)?;
    let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    b.copy_from_host(&raw)?;
    Ok(b)
}
