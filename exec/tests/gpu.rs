//! GPU tests: each checks a GPU result against a CPU reference (`serve::kv`, an f64 product,
//! the CPU model). They need a CUDA GPU, so they are ignored by default; on a GPU machine run
//! `cargo test -p hetsim-exec --test gpu -- --ignored`. There a missing driver fails the test
//! with the driver's error instead of skipping it.

use hetsim_exec::cuda::device::{self, Gpu};
use hetsim_exec::cuda::kernels::{Module, grid_for};
use hetsim_exec::cuda::staging::{MIB, Stager};
use hetsim_exec::kargs;
use hetsim_exec::measure::probes::link::LinkBench;
use hetsim_exec::serve::kv::{self, KV_SRC, ModelShape};

/// How many GPUs the driver reports; panics with the driver's error where there is none.
fn gpus() -> usize {
    match device::device_count() {
        Ok(0) => panic!("the CUDA driver reports no GPU"),
        Ok(n) => n,
        Err(e) => panic!("needs a CUDA GPU: {e}"),
    }
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    (0..n.div_ceil(8))
        .flat_map(|i| kv::mix64(seed ^ i as u64).to_le_bytes())
        .take(n)
        .collect()
}

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on a GPU machine"]
fn gather_scatter_and_checksums_match_the_cpu() {
    gpus();
    let g = Gpu::open(0).unwrap();
    let m = Module::load(&g, "kv_transfer.cu", KV_SRC).unwrap();
    let (gather, scatter, csp, csf) = (
        m.function("kv_gather").unwrap(),
        m.function("kv_scatter").unwrap(),
        m.function("kv_checksum_paged").unwrap(),
        m.function("checksum_u4").unwrap(),
    );
    let shape = ModelShape {
        layers: 3,
        kv_heads: 4,
        head_dim: 64,
        hidden: 256,
        visual_tokens: 8,
    };
    let s = 45usize;
    let nblocks = 9usize;
    let t_src = kv::block_table(shape.blocks_for(s), nblocks, 3).unwrap();
    let t_dst = kv::block_table(shape.blocks_for(s), nblocks, 4).unwrap();
    let pool_bytes = shape.pool_bytes(nblocks);
    let host_pool = random_bytes(pool_bytes, 9);
    let st = g.stream().unwrap();
    let pool = g.alloc(pool_bytes).unwrap();
    pool.copy_from_host(&host_pool).unwrap();
    let packed = g.alloc(shape.kv_bytes(s)).unwrap();
    let dpool = g.alloc(pool_bytes).unwrap();
    dpool.memset_async(0xff, &st).unwrap();
    let tb = |t: &[i32]| {
        let b = g.alloc(t.len() * 4).unwrap();
        b.copy_from_host(&t.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
            .unwrap();
        b
    };
    let (ts, td) = (tb(&t_src), tb(&t_dst));
    let sums = g.alloc(16).unwrap();
    sums.memset_async(0, &st).unwrap();
    let n_vec = (shape.kv_bytes(s) / 16) as u64;
    let (dv, ss, h, nb) = (
        (shape.head_dim / 8) as u32,
        s as u32,
        shape.kv_heads as u32,
        nblocks as u32,
    );
    let grid = grid_for(n_vec, 256, g.info.sms);
    let (pp, pk, pt, pd, ptd, out0, out1) = (
        pool.ptr,
        packed.ptr,
        ts.ptr,
        dpool.ptr,
        td.ptr,
        sums.ptr,
        sums.ptr + 8,
    );
    // SAFETY: kv_gather(pool, packed, table, n_vec, dv, s, heads, nblocks): pool holds nblocks
    // blocks, packed kv_bytes(s) = 16·n_vec bytes, ts the request's blocks; all alive until the
    // synchronize.
    unsafe {
        gather.launch(
            grid,
            256,
            &st,
            &mut kargs![pp, pk, pt, n_vec, dv, ss, h, nb],
        )
    }
    .unwrap();
    // SAFETY: kv_checksum_paged(pool, table, n_vec, dv, s, heads, nblocks, out): the buffers of the
    // gather above, out the first u64 of sums.
    unsafe {
        csp.launch(
            grid,
            256,
            &st,
            &mut kargs![pp, pt, n_vec, dv, ss, h, nb, out0],
        )
    }
    .unwrap();
    // SAFETY: checksum_u4(buf, n_vec, out): packed holds 16·n_vec bytes, out the second u64 of
    // sums.
    unsafe { csf.launch(grid, 256, &st, &mut kargs![pk, n_vec, out1]) }.unwrap();
    // SAFETY: kv_scatter(packed, pool, table, n_vec, dv, s, heads, nblocks): packed as gathered,
    // dpool nblocks blocks, td the destination blocks; all alive until the synchronize.
    unsafe {
        scatter.launch(
            grid,
            256,
            &st,
            &mut kargs![pk, pd, ptd, n_vec, dv, ss, h, nb],
        )
    }
    .unwrap();
    st.synchronize().unwrap();

    // CPU reference on bf16 elements (u16)
    let as_u16 = |b: &[u8]| {
        b.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect::<Vec<u16>>()
    };
    let want_packed = kv::gather_cpu(&as_u16(&host_pool), &t_src, &shape, s, nblocks);
    let mut got = vec![0u8; packed.bytes];
    packed.copy_to_host(&mut got).unwrap();
    assert_eq!(
        as_u16(&got),
        want_packed,
        "GPU gather differs from the CPU reference"
    );
    let mut want_dst = vec![0xffffu16; pool_bytes / 2];
    kv::scatter_cpu(&want_packed, &mut want_dst, &t_dst, &shape, s, nblocks);
    let mut got_dst = vec![0u8; pool_bytes];
    dpool.copy_to_host(&mut got_dst).unwrap();
    assert_eq!(
        as_u16(&got_dst),
        want_dst,
        "GPU scatter differs from the CPU reference"
    );
    let mut c = [0u8; 16];
    sums.copy_to_host(&mut c).unwrap();
    let cpu = kv::checksum_cpu(&got);
    assert_eq!(
        u64::from_le_bytes(c[..8].try_into().unwrap()),
        cpu,
        "paged checksum"
    );
    assert_eq!(
        u64::from_le_bytes(c[8..].try_into().unwrap()),
        cpu,
        "flat checksum"
    );
}

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on a GPU machine"]
fn staged_copy_delivers_every_byte() {
    let n = gpus();
    let a = Gpu::open(0).unwrap();
    let b = Gpu::open(if n > 1 { 1 } else { 0 }).unwrap();
    let bytes = 13 * MIB + 4096 + 16; // not a multiple of the chunk
    let lb = LinkBench::new(&a, &b, bytes).unwrap();
    let data = random_bytes(bytes, 5);
    lb.src_buf.copy_from_host(&data).unwrap();
    let st = Stager::new(&a, &b, 2 * MIB, 3).unwrap();
    let start = device::Event::sync_only(&b).unwrap();
    start.record(&st.h2d).unwrap();
    st.enqueue(lb.src_buf.ptr, lb.dst_buf.ptr, bytes, 2 * MIB, &start)
        .unwrap();
    st.h2d.synchronize().unwrap();
    let mut got = vec![0u8; bytes];
    lb.dst_buf.copy_to_host(&mut got).unwrap();
    assert!(got == data, "staged copy corrupted data");
    if n > 1 && device::peer_info(&a, &b).unwrap().can_access_peer {
        a.enable_peer_access(&b).unwrap();
        lb.dst_buf.memset_async(0, &lb.s_dst).unwrap();
        lb.s_dst.synchronize().unwrap();
        device::copy_peer_async(&lb.dst_buf, &lb.src_buf, bytes, &lb.s_src).unwrap();
        lb.s_src.synchronize().unwrap();
        lb.dst_buf.copy_to_host(&mut got).unwrap();
        assert!(got == data, "peer copy corrupted data");
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on a GPU machine"]
fn cublaslt_gemm_matches_f64_reference() {
    gpus();
    let g = Gpu::open(0).unwrap();
    let pk = hetsim_exec::measure::probes::compute::ProbeKernels::load(&g).unwrap();
    let lt = hetsim_exec::cuda::gemm::Lt::new().unwrap();
    let s = g.stream().unwrap();
    let err = hetsim_exec::measure::probes::compute::check_gemm(&g, &lt, &pk, &s).unwrap();
    assert!(err < 1e-2, "{err}");
}

#[test]
fn no_driver_is_an_error_not_a_panic() {
    // On any machine: either a GPU answers or we get NoDriver (exit code 2), never a panic.
    match device::device_count() {
        Ok(_) => {}
        Err(e) => assert_eq!(e.exit_code(), 2, "{e}"),
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on a GPU machine"]
fn engine_selftest_passes() {
    gpus();
    let checks = hetsim_exec::serve::selftest::run(0, 7).unwrap();
    println!("{}", hetsim_exec::serve::selftest::table(&checks));
    hetsim_exec::serve::selftest::failures(&checks).unwrap();
}
