use diffuse::bench::time_op;
use diffuse::gpu::{Gpu, KernelKey};
use diffuse::ops;
use diffuse::ops::conv2d::{Conv2dArgs, Epilogue};
use diffuse::tensor::{DType, Tensor};

fn vals(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

fn main() {
    let gpu = Gpu::new(&Default::default()).unwrap();
    for dt in [DType::F32, DType::F16] {
        for (n, cin, hw, cout) in [
            (8, 32, 28, 32),
            (8, 64, 14, 64),
            (8, 64, 7, 64),
            (8, 64, 32, 64),
            (1, 32, 28, 32),
            (1, 64, 14, 64),
        ] {
            let xv = vals(n * cin * hw * hw);
            let wv = vals(cout * cin * 9);
            let x = Tensor::from_f32(&gpu, "x", &[n, cin, hw, hw], &xv, dt).unwrap();
            let w = Tensor::from_f32(&gpu, "w", &[cout, cin, 3, 3], &wv, dt).unwrap();
            // packed [cout/4][cin][9][4]
            let mut pk = vec![0f32; cout * cin * 9];
            for co in 0..cout {
                for ci in 0..cin {
                    for t in 0..9 {
                        pk[((co / 4 * cin + ci) * 9 + t) * 4 + co % 4] =
                            wv[(co * cin + ci) * 9 + t];
                    }
                }
            }
            let wp = Tensor::from_f32(&gpu, "wp", &[cout * cin * 9], &pk, dt).unwrap();
            let b = Tensor::from_f32(&gpu, "b", &[cout], &vals(cout), dt).unwrap();
            let y = Tensor::empty(&gpu, "y", &[n, cout, hw, hw], dt).unwrap();
            let y2 = Tensor::empty(&gpu, "y2", &[n, cout, hw, hw], dt).unwrap();
            let args = Conv2dArgs {
                stride: 1,
                padding: 1,
                extra_end: 0,
            };
            let fl = 2.0 * (n * cout * hw * hw * cin * 9) as f64;
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                best = best.min(
                    time_op(&gpu, &|r| {
                        ops::conv2d::conv2d_variant(
                            r,
                            &x,
                            &w,
                            Some(&b),
                            &y,
                            args,
                            Epilogue::default(),
                            Some("row3-cb4"),
                        )
                    })
                    .unwrap(),
                );
            }
            let p: [u32; 16] = [
                cin as u32,
                hw as u32,
                hw as u32,
                cout as u32,
                hw as u32,
                hw as u32,
                3,
                3,
                1,
                1,
                (cin * 9) as u32,
                (hw * hw) as u32,
                (cin * hw * hw) as u32,
                (cout * hw * hw) as u32,
                1f32.to_bits(),
                0,
            ];
            let key = KernelKey::new("conv2d", "main", dt, [8, 8, 1])
                .flag("ROW3", true)
                .define("CB", 4)
                .flag("BIAS", true)
                .flag("PACKED", true);
            let groups = [
                ((hw * hw.div_ceil(4)) as u32).div_ceil(8),
                (cout as u32).div_ceil(32),
                n as u32,
            ];
            let mut bp = f64::INFINITY;
            for _ in 0..3 {
                bp = bp.min(
                    time_op(&gpu, &|r| {
                        r.dispatch(
                            &key,
                            bytemuck::bytes_of(&p),
                            vec![
                                x.binding(&gpu, "c")?,
                                wp.binding(&gpu, "c")?,
                                y2.binding(&gpu, "c")?,
                                b.binding(&gpu, "c")?,
                            ],
                            groups,
                        )?;
                        Ok(())
                    })
                    .unwrap(),
                );
            }
            let (a, c) = (y.to_vec_f32(&gpu).unwrap(), y2.to_vec_f32(&gpu).unwrap());
            let same = a
                .iter()
                .zip(&c)
                .all(|(u, v)| (u - v).abs() <= 1e-2 * u.abs().max(1.0));
            println!("{dt:?} n{n} cin{cin} {hw}x{hw} cout{cout}: row3-cb4 {:.1}  packed {:.1} GF/s ({:.2}x) same={same}", fl / best / 1e9, fl / bp / 1e9, best / bp);
        }
    }
}
