//! Every kernel family against the f64 CPU reference over randomised shapes (odd channel
//! counts, 1×1 spatial, sizes off the tile, batch > 1), in f32 and f16, with native f16 and
//! with the packed-u32 fallback. Tolerances are stated in `diffuse::selfcheck`.

mod common;

use common::{assert_checks, gpus};
use diffuse::gpu::tuning::runnable;
use diffuse::ops::conv2d::{Conv2dArgs, ConvKernel, ConvShape};
use diffuse::ops::elementwise::{Binary, Unary};
use diffuse::ops::embedding::TimestepEmbedding;
use diffuse::ops::reduce::Reduce;
use diffuse::selfcheck::{self as sc, TestRng};
use diffuse::DType;

const DTYPES: [DType; 2] = [DType::F32, DType::F16];

#[test]
fn unary_ops() {
    let mut checks = Vec::new();
    let mut rng = TestRng(1);
    for gpu in gpus() {
        for dt in DTYPES {
            for op in [
                Unary::Silu,
                Unary::Gelu,
                Unary::GeluTanh,
                Unary::Clamp { lo: -0.5, hi: 1.25 },
                Unary::Affine {
                    alpha: -1.5,
                    beta: 0.25,
                },
            ] {
                for (i, n) in [1usize, 3, 257, rng.range(2, 5000)].into_iter().enumerate() {
                    checks.push(sc::unary(gpu, op, n, dt, i % 2 == 1, rng.next_u64()).unwrap());
                }
            }
        }
    }
    assert_checks(&checks);
}

#[test]
fn binary_ops_broadcast() {
    let mut checks = Vec::new();
    let mut rng = TestRng(2);
    for gpu in gpus() {
        for dt in DTYPES {
            for op in [Binary::Add, Binary::Mul] {
                let (n, c, h, w) = (
                    rng.range(1, 3),
                    rng.range(1, 9),
                    rng.range(1, 7),
                    rng.range(1, 7),
                );
                let a = [n, c, h, w];
                for b in [
                    vec![n, c, h, w],
                    vec![c, 1, 1],
                    vec![n, c, 1, 1],
                    vec![1],
                    vec![h, w],
                    vec![1, c, h, w],
                ] {
                    checks.push(sc::binary(gpu, op, &a, &b, dt, rng.next_u64()).unwrap());
                }
            }
        }
    }
    assert_checks(&checks);
}

#[test]
fn axpby() {
    let mut checks = Vec::new();
    let mut rng = TestRng(3);
    for gpu in gpus() {
        for dt in DTYPES {
            for n in [1usize, 5, rng.range(6, 9000)] {
                checks.push(
                    sc::axpby(
                        gpu,
                        n,
                        rng.uniform(-2.0, 2.0) as f32,
                        rng.uniform(-2.0, 2.0) as f32,
                        dt,
                        rng.next_u64(),
                    )
                    .unwrap(),
                );
            }
        }
    }
    assert_checks(&checks);
}

#[test]
fn modulate_scale_shift() {
    let mut checks = Vec::new();
    let mut rng = TestRng(12);
    for gpu in gpus() {
        for dt in DTYPES {
            for xs in [
                [1, 1, 1, 1],
                [2, 3, 5, 7],
                [
                    rng.range(1, 3),
                    rng.range(1, 9),
                    rng.range(1, 9),
                    rng.range(1, 9),
                ],
            ] {
                checks.push(sc::modulate(gpu, xs, dt, rng.next_u64()).unwrap());
            }
        }
    }
    checks.push(sc::modulate(common::gpu_small_bindings(), [2, 6, 17, 19], DType::F32, 5).unwrap());
    assert_checks(&checks);
}

#[test]
fn gemm_random_shapes() {
    let mut checks = Vec::new();
    let mut rng = TestRng(4);
    for gpu in gpus() {
        for dt in DTYPES {
            // Fixed awkward cases, then random ones (some with K % 4 == 0 for the vec4 path).
            let mut cases = vec![
                (1, 1, 1, 1),
                (1, 1, 7, 4),
                (2, 33, 31, 5),
                (1, 64, 64, 64),
                (3, 5, 36, 8),
            ];
            for _ in 0..6 {
                let k = if rng.range(0, 1) == 0 {
                    4 * rng.range(1, 20)
                } else {
                    rng.range(1, 70)
                };
                let n = if rng.range(0, 1) == 0 {
                    4 * rng.range(1, 18)
                } else {
                    rng.range(1, 70)
                };
                cases.push((rng.range(1, 3), rng.range(1, 70), n, k));
            }
            for (i, (b, m, n, k)) in cases.into_iter().enumerate() {
                let trans_b = i % 2 == 0;
                let shared = (i / 2) % 2 == 0;
                let bias = i % 3 == 0;
                checks.push(
                    sc::matmul(gpu, b, m, n, k, trans_b, shared, bias, dt, rng.next_u64()).unwrap(),
                );
                checks.push(
                    sc::matmul(
                        gpu,
                        b,
                        m,
                        n,
                        k,
                        !trans_b,
                        !shared,
                        !bias,
                        dt,
                        rng.next_u64(),
                    )
                    .unwrap(),
                );
                // Every variant forced (the shared-memory tile is a tuning candidate).
                for v in diffuse::ops::gemm::GemmKernel::ALL {
                    let seed = rng.next_u64();
                    let c = sc::matmul_variant(
                        gpu,
                        [b, m, n, k],
                        trans_b,
                        shared,
                        bias,
                        dt,
                        seed,
                        Some(v),
                    );
                    checks.push(c.unwrap());
                }
            }
            // Several 64×64 tiles with K not a multiple of the tile's 16.
            for tb in [false, true] {
                let seed = rng.next_u64();
                let c = sc::matmul_variant(
                    gpu,
                    [2, 130, 70, 37],
                    tb,
                    false,
                    true,
                    dt,
                    seed,
                    Some(diffuse::ops::gemm::GemmKernel::Tile64),
                );
                checks.push(c.unwrap());
            }
        }
    }
    assert_checks(&checks);
}

#[test]
fn conv2d_random_shapes() {
    let mut checks = Vec::new();
    let mut rng = TestRng(5);
    for gpu in gpus() {
        for dt in DTYPES {
            for (xs, cout, scale) in [
                ([2, 4, 8, 8], 8, 1.0f32),
                ([1, 3, 5, 7], 5, 0.5),
                ([3, 8, 6, 4], 12, 1.0 / 1.414),
            ] {
                checks.push(sc::conv2d_epilogue(gpu, xs, cout, scale, dt, rng.next_u64()).unwrap());
            }
            // Every variant forced (the defaults differ per adapter): the shared-memory tile
            // kernel, the 3×3 stride-1 row kernel and the general kernel; rows whose width is
            // and is not a multiple of 4, padding 0 and 1, strides 1 and 2, 1×1 and 3×3
            // kernels, K not a multiple of the tile's 16, several 64-channel × 64-pixel tiles,
            // with and without the fused epilogue, both register blocks.
            for (xs, cout, ksize, stride, pad, epi) in [
                ([2, 4, 8, 8], 8, 3, 1, 1, None),
                ([1, 3, 14, 14], 5, 3, 1, 1, Some(0.5f32)),
                ([3, 5, 7, 9], 12, 3, 1, 1, None),
                ([1, 2, 6, 5], 3, 3, 1, 0, Some(1.0)),
                ([2, 3, 3, 3], 9, 3, 1, 1, Some(2.0)),
                ([2, 7, 12, 11], 70, 3, 1, 1, Some(0.7)),
                ([1, 6, 13, 10], 9, 3, 2, 1, None),
                ([2, 20, 9, 9], 66, 1, 1, 0, Some(1.0)),
            ] {
                let args = diffuse::ops::conv2d::Conv2dArgs {
                    stride,
                    padding: pad,
                    extra_end: 0,
                };
                let shape = ConvShape {
                    dt,
                    kh: ksize,
                    kw: ksize,
                    stride,
                    packed: false,
                    q8: false,
                };
                let runs = runnable::<ConvKernel>(gpu.info(), &shape);
                // The row kernel exactly where it applies; packed weights for every kernel
                // that reads them.
                let row3 = runs.iter().any(|v| matches!(v, ConvKernel::Row3 { .. }));
                assert_eq!(row3, ksize == 3 && stride == 1);
                for v in runs {
                    for packed in [false, true] {
                        if packed && !v.reads_packed() {
                            continue;
                        }
                        let seed = rng.next_u64();
                        let c =
                            sc::conv2d_forced(gpu, xs, cout, ksize, args, epi, dt, seed, v, packed);
                        checks.push(c.unwrap());
                    }
                }
            }
            let mut cases: Vec<([usize; 4], usize, usize, usize, usize)> = vec![
                ([1, 1, 1, 1], 1, 1, 1, 0),   // 1×1 spatial, 1×1 kernel
                ([2, 3, 1, 1], 5, 3, 1, 1),   // 1×1 spatial, 3×3 kernel with padding
                ([1, 4, 8, 8], 8, 3, 1, 1),   // K % 4 == 0 (vec4 weights)
                ([2, 8, 9, 7], 12, 1, 1, 0),  // 1×1 conv
                ([1, 5, 13, 11], 7, 3, 2, 1), // downsampling conv, odd sizes
                ([3, 2, 6, 6], 3, 3, 2, 0),
            ];
            for _ in 0..4 {
                let cin = rng.range(1, 9);
                let k = [1, 3][rng.range(0, 1)];
                let stride = rng.range(1, 2);
                let pad = if k == 3 { rng.range(0, 1) } else { 0 };
                let h = rng.range(k.max(1), 13);
                let w = rng.range(k.max(1), 13);
                cases.push((
                    [rng.range(1, 2), cin, h, w],
                    rng.range(1, 13),
                    k,
                    stride,
                    pad,
                ));
            }
            // diffusers' Downsample2D(padding=0): pad (0, 1, 0, 1), 3×3 stride 2.
            let extra = [
                rng.range(1, 2),
                rng.range(1, 8),
                2 * rng.range(1, 6),
                2 * rng.range(1, 6),
            ];
            checks.push(
                sc::conv2d(
                    gpu,
                    extra,
                    rng.range(1, 9),
                    3,
                    3,
                    Conv2dArgs {
                        stride: 2,
                        padding: 0,
                        extra_end: 1,
                    },
                    true,
                    dt,
                    rng.next_u64(),
                )
                .unwrap(),
            );
            for (i, (xs, cout, k, stride, padding)) in cases.into_iter().enumerate() {
                let args = Conv2dArgs {
                    stride,
                    padding,
                    extra_end: 0,
                };
                checks.push(
                    sc::conv2d(gpu, xs, cout, k, k, args, i % 2 == 0, dt, rng.next_u64()).unwrap(),
                );
            }
        }
    }
    assert_checks(&checks);
}

#[test]
fn group_norm_random_shapes() {
    let mut checks = Vec::new();
    let mut rng = TestRng(6);
    for gpu in gpus() {
        for dt in DTYPES {
            let mut cases = vec![
                ([1, 1, 1, 1], 1),
                ([2, 6, 1, 1], 3),
                ([1, 32, 16, 16], 32),
                ([3, 9, 5, 3], 3),
            ];
            for _ in 0..3 {
                let g = rng.range(1, 8);
                cases.push((
                    [
                        rng.range(1, 3),
                        g * rng.range(1, 4),
                        rng.range(1, 9),
                        rng.range(1, 9),
                    ],
                    g,
                ));
            }
            for (i, (xs, g)) in cases.into_iter().enumerate() {
                let seed = rng.next_u64();
                // Every variant the adapter can run; a large common offset on odd cases (the
                // variance is accumulated in one pass, shifted by the group's first element).
                let offset = if i % 2 == 1 { 100.0 } else { 0.5 };
                use diffuse::ops::group_norm::GroupNormKernel;
                for v in runnable::<GroupNormKernel>(gpu.info(), &()) {
                    let silu = i % 2 == 1;
                    checks.push(
                        sc::group_norm_variant(gpu, xs, g, silu, dt, seed, Some(v), offset)
                            .unwrap(),
                    );
                }
            }
        }
    }
    assert_checks(&checks);
}

/// Row windows (zero fill outside the source, nearest ×2, zero_rows) and GroupNorm over row
/// bands with merged statistics equal to GroupNorm of the whole tensor — including a large
/// common offset (each band's sums are shifted by its own first element) and one-row bands.
#[test]
fn row_bands_and_banded_group_norm() {
    use diffuse::selfcheck::bands;
    let mut checks = Vec::new();
    let mut rng = TestRng(21);
    for gpu in gpus() {
        for dt in DTYPES {
            for (xs, src, f, hd, d0, rows) in [
                ([1, 3, 5, 7], Some(-1), 1, 7, 0, 7),
                ([2, 2, 4, 3], Some(1), 2, 10, 0, 10),
                ([1, 1, 3, 5], Some(2), 1, 4, 3, 1),
                ([1, 4, 2, 9], None, 1, 6, 2, 3),
            ] {
                checks.push(
                    bands::copy_rows(gpu, xs, src, f, hd, d0, rows, dt, rng.next_u64()).unwrap(),
                );
            }
            for (i, (xs, g, t)) in [
                ([1, 4, 6, 5], 2, 2),
                ([2, 6, 7, 3], 3, 7),
                ([1, 32, 16, 16], 32, 3),
                ([2, 8, rng.range(4, 20), rng.range(1, 30)], 4, 4),
            ]
            .into_iter()
            .enumerate()
            {
                let offset = if i % 2 == 1 { 100.0 } else { 0.5 };
                let c =
                    bands::group_norm_banded(gpu, xs, g, t, i % 2 == 0, offset, dt, rng.next_u64());
                checks.push(c.unwrap());
            }
        }
    }
    assert_checks(&checks);
}

#[test]
fn softmax_random_shapes() {
    let mut checks = Vec::new();
    let mut rng = TestRng(7);
    for gpu in gpus() {
        for dt in DTYPES {
            for (rows, cols) in [
                (1, 1),
                (3, 2),
                (5, 257),
                (rng.range(1, 40), rng.range(1, 700)),
            ] {
                let (scale, seed) = (rng.uniform(0.05, 2.0) as f32, rng.next_u64());
                use diffuse::ops::softmax::SoftmaxKernel;
                for layout in runnable::<SoftmaxKernel>(gpu.info(), &cols) {
                    checks.push(
                        sc::softmax_layout(gpu, rows, cols, scale, dt, seed, layout).unwrap(),
                    );
                }
            }
        }
    }
    assert_checks(&checks);
}

#[test]
fn resample_and_concat() {
    let mut checks = Vec::new();
    let mut rng = TestRng(8);
    for gpu in gpus() {
        for dt in DTYPES {
            for xs in [
                [1, 1, 1, 1],
                [2, 3, 5, 7],
                [1, rng.range(1, 9), rng.range(1, 12), rng.range(1, 12)],
            ] {
                checks.push(sc::resample(gpu, xs, Some(2), dt, rng.next_u64()).unwrap());
            }
            checks.push(sc::resample(gpu, [1, 2, 3, 4], Some(3), dt, rng.next_u64()).unwrap());
            for xs in [
                [1, 1, 2, 2],
                [2, 5, 6, 10],
                [1, rng.range(1, 9), 2 * rng.range(1, 8), 2 * rng.range(1, 8)],
            ] {
                checks.push(sc::resample(gpu, xs, None, dt, rng.next_u64()).unwrap());
            }
            // Reflect padding to multiples of 2^depth (ConditionalUNet), and the crop back.
            for (xs, ho, wo) in [
                ([1, 1, 1, 1], 1, 1),
                ([2, 3, 20, 28], 32, 32),
                ([1, 2, 17, 33], 32, 48),
                ([1, 2, 5, 3], 9, 5),
                ([2, 3, 32, 32], 20, 28),
                (
                    [1, rng.range(1, 5), rng.range(2, 12), rng.range(2, 12)],
                    0,
                    0,
                ),
            ] {
                let (ho, wo) = if ho == 0 {
                    (rng.range(1, 2 * xs[2] - 1), rng.range(1, 2 * xs[3] - 1))
                } else {
                    (ho, wo)
                };
                checks.push(sc::reflect_pad(gpu, xs, ho, wo, dt, rng.next_u64()).unwrap());
            }
            // A padding as large as the dimension cannot be reflected (torch refuses it too).
            let x = diffuse::Tensor::zeros(gpu, "x", &[1, 1, 4, 5], dt).unwrap();
            for (ho, wo) in [(8, 5), (4, 10)] {
                let y = diffuse::Tensor::zeros(gpu, "y_too_big", &[1, 1, ho, wo], dt).unwrap();
                let e = gpu
                    .run(|rec| diffuse::ops::resample::reflect_pad(rec, &x, &y))
                    .unwrap_err();
                assert!(e.to_string().contains("y_too_big"), "{e}");
            }
            for (n, ca, cb, h, w) in [
                (1, 1, 1, 1, 1),
                (2, 3, 5, 4, 4),
                (
                    3,
                    rng.range(1, 9),
                    rng.range(1, 9),
                    rng.range(1, 9),
                    rng.range(1, 9),
                ),
            ] {
                checks.push(sc::concat(gpu, n, ca, cb, h, w, dt, rng.next_u64()).unwrap());
            }
        }
    }
    assert_checks(&checks);
}

#[test]
fn timestep_embedding_variants() {
    let mut checks = Vec::new();
    let mut rng = TestRng(9);
    for gpu in gpus() {
        for dt in DTYPES {
            for (dim, flip, shift, t_max) in [
                (32, false, 1.0, 1000.0),
                (33, true, 0.0, 1000.0),
                (128, true, 0.0, 1.0),
                (6, false, 1.0, 50.0),
            ] {
                let e = TimestepEmbedding {
                    flip_sin_to_cos: flip,
                    downscale_freq_shift: shift,
                    ..Default::default()
                };
                checks.push(
                    sc::embedding(gpu, rng.range(1, 5), dim, t_max, e, dt, rng.next_u64()).unwrap(),
                );
            }
        }
    }
    assert_checks(&checks);
}

#[test]
fn reductions() {
    let mut checks = Vec::new();
    let mut rng = TestRng(10);
    for gpu in gpus() {
        for dt in DTYPES {
            for op in [Reduce::Sum, Reduce::Mean, Reduce::L2Norm, Reduce::AbsMax] {
                for (n, len) in [
                    (1, 1),
                    (3, 255),
                    (2, 3 * 32 * 32),
                    (rng.range(1, 4), rng.range(1, 70000)),
                ] {
                    checks.push(sc::reduce(gpu, op, n, len, dt, rng.next_u64()).unwrap());
                }
            }
        }
    }
    assert_checks(&checks);
}

#[test]
fn fourier_lookup_transpose() {
    let mut checks = Vec::new();
    let mut rng = TestRng(11);
    for gpu in gpus() {
        for dt in DTYPES {
            for (log, flip) in [(true, false), (false, true)] {
                checks.push(
                    sc::fourier(
                        gpu,
                        rng.range(1, 5),
                        rng.range(1, 40),
                        log,
                        flip,
                        dt,
                        rng.next_u64(),
                    )
                    .unwrap(),
                );
            }
            checks.push(sc::lookup(gpu, 1, 1, 1, dt, rng.next_u64()).unwrap());
            checks.push(
                sc::lookup(
                    gpu,
                    rng.range(1, 9),
                    rng.range(2, 11),
                    rng.range(1, 70),
                    dt,
                    rng.next_u64(),
                )
                .unwrap(),
            );
            for (b, r, c) in [
                (1, 1, 1),
                (2, 64, 16),
                (rng.range(1, 3), rng.range(1, 50), rng.range(1, 50)),
            ] {
                checks.push(sc::transpose(gpu, b, r, c, dt, rng.next_u64()).unwrap());
            }
        }
    }
    assert_checks(&checks);
}

/// A table larger than one binding (4 KiB here; CLIP's f32 token embedding on lavapipe) is
/// looked up in aligned row ranges, one dispatch each: the same rows as the CPU gather.
#[test]
fn lookup_of_a_table_split_over_bindings() {
    let gpu = common::gpu_small_bindings();
    let mut checks = Vec::new();
    let mut rng = TestRng(12);
    for dt in DTYPES {
        for (rows, dim) in [
            (300, 24),
            (1000, 7),
            (rng.range(200, 900), rng.range(3, 60)),
        ] {
            checks.push(sc::lookup(gpu, 8, rows, dim, dt, rng.next_u64()).unwrap());
        }
    }
    assert_checks(&checks);
    // One row that does not fit a binding is refused by name.
    let err = sc::lookup(gpu, 1, 2, 2048, DType::F32, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("class_embedding.weight"), "{err}");
}

#[test]
fn fir_resampling() {
    let mut checks = Vec::new();
    let mut rng = TestRng(13);
    for gpu in gpus() {
        for dt in DTYPES {
            for k in [
                vec![1.0, 3.0, 3.0, 1.0],
                vec![1.0, 1.0],
                vec![1.0, 2.0, 1.0],
            ] {
                for up in [true, false] {
                    let h = 2 * rng.range(1, 6);
                    checks.push(
                        sc::fir(
                            gpu,
                            [rng.range(1, 2), rng.range(1, 4), h, 2 * rng.range(1, 6)],
                            &k,
                            up,
                            dt,
                            rng.next_u64(),
                        )
                        .unwrap(),
                    );
                }
            }
        }
    }
    assert_checks(&checks);
}

#[test]
fn quick_gelu_and_geglu() {
    let mut checks = Vec::new();
    let mut rng = TestRng(31);
    for gpu in gpus() {
        for dt in DTYPES {
            for (i, n) in [1usize, 257, rng.range(2, 5000)].into_iter().enumerate() {
                checks.push(
                    sc::unary(gpu, Unary::QuickGelu, n, dt, i % 2 == 1, rng.next_u64()).unwrap(),
                );
            }
            for (rows, f) in [(1, 1), (3, 5), (rng.range(1, 40), rng.range(1, 300))] {
                checks.push(sc::transformer::geglu(gpu, rows, f, dt, rng.next_u64()).unwrap());
            }
        }
    }
    assert_checks(&checks);
}

#[test]
fn layer_norm_random_shapes() {
    let mut checks = Vec::new();
    let mut rng = TestRng(32);
    for gpu in gpus() {
        for dt in DTYPES {
            let shapes: Vec<Vec<usize>> = vec![
                vec![1],
                vec![3, 7],
                vec![2, 77, 32],
                vec![rng.range(1, 3), rng.range(1, 50), rng.range(1, 400)],
            ];
            for (i, shape) in shapes.into_iter().enumerate() {
                // Every affine combination; a large common offset on odd cases (two-pass
                // statistics) and the CLIP eps.
                for (w, b) in [(true, true), (false, false), (true, false)] {
                    let offset = if i % 2 == 1 { 100.0 } else { 0.0 };
                    checks.push(
                        sc::transformer::layer_norm(
                            gpu,
                            &shape,
                            w,
                            b,
                            1e-5,
                            offset,
                            dt,
                            rng.next_u64(),
                        )
                        .unwrap(),
                    );
                }
            }
        }
    }
    assert_checks(&checks);
}

#[test]
fn attention_cross_causal_chunked() {
    use sc::transformer::AttnPath;
    let mut checks = Vec::new();
    let mut rng = TestRng(33);
    for gpu in gpus() {
        for dt in DTYPES {
            // [B, Lq, Lk, H, D]: self-attention, cross-attention (Lq ≠ Lk, CLIP's 77 keys),
            // D not a multiple of 4, D = 40 / 64 / 160 (SD 1.x and 2.x head dims), a random case.
            let cases = [
                [1, 1, 1, 1, 1],
                [2, 13, 13, 2, 3],
                [2, 16, 77, 2, 8],
                [1, 9, 5, 3, 40],
                [2, 7, 7, 1, 64],
                [1, 5, 6, 1, 160],
                [
                    rng.range(1, 2),
                    rng.range(1, 40),
                    rng.range(1, 40),
                    rng.range(1, 4),
                    rng.range(1, 70),
                ],
            ];
            for dims in cases {
                let lq = dims[1];
                for causal in [false, true] {
                    if causal && dims[1] != dims[2] {
                        continue;
                    }
                    let seed = rng.next_u64();
                    // Whole score matrix, chunks of 4 queries (a shorter last chunk), fused.
                    for path in [
                        AttnPath::Gemm { chunk: lq },
                        AttnPath::Gemm { chunk: 4.min(lq) },
                        AttnPath::Fused,
                    ] {
                        checks.push(
                            sc::transformer::attention(gpu, dims, causal, path, dt, seed).unwrap(),
                        );
                    }
                }
            }
        }
    }
    assert_checks(&checks);
}
