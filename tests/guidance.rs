//! Classifier-free guidance: the batched 2N forward with the null label, combined on the GPU,
//! equals (1 − w)·ε̂(x, ∅) + w·ε̂(x, c) computed from two separate N-sample forwards.

mod common;

use diffuse::load::RandomWeights;
use diffuse::models::guided::GuidedUNet;
use diffuse::models::{Denoiser, Prediction};
use diffuse::nn::config::UNet2DConfig;
use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::selfcheck::TestRng;
use diffuse::solvers::program::ModelTime;
use diffuse::DType;

#[test]
fn guided_forward_combines_conditional_and_null_predictions() {
    let gpu = common::gpu();
    let cfg = UNet2DConfig::from_json(
        &serde_json::json!({
            "sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [8, 16],
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
            "norm_num_groups": 4, "layers_per_block": 1, "num_class_embeds": 4
        }),
        "cfg-test",
    )
    .unwrap();
    let model = UNet2DModel::load(gpu, cfg, &RandomWeights { seed: 3 }, DType::F32).unwrap();
    let labels = [0i64, 1, 2];
    let w = 2.5f32;
    let x = TestRng(9).values(3 * 64, -1.0, 1.0, DType::F32);
    let time = ModelTime {
        t: 321.0,
        alpha: 0.6,
        sigma: 0.8,
    };
    let mut guided = GuidedUNet::new(
        gpu,
        model.prepare(gpu, 6, 8, 8).unwrap(),
        Prediction::Epsilon,
        &labels,
        3,
        w,
    )
    .unwrap();
    guided.input().write_f32(gpu, &x).unwrap();
    guided.run(gpu, time).unwrap();
    let got = guided.output().to_vec_f32(gpu).unwrap();
    let single = model.prepare(gpu, 3, 8, 8).unwrap();
    let cond = single
        .forward_host(gpu, &x, &[321.0; 3], Some(&labels))
        .unwrap();
    let uncond = single
        .forward_host(gpu, &x, &[321.0; 3], Some(&[3, 3, 3]))
        .unwrap();
    let mut worst = 0f32;
    for i in 0..got.len() {
        let want = (1.0 - w) * uncond[i] + w * cond[i];
        worst = worst.max((got[i] - want).abs());
    }
    let scale = cond.iter().chain(&uncond).fold(0f32, |m, v| m.max(v.abs()));
    println!("max|Δ| {worst:.3e} (scale {scale:.3})");
    assert!(
        worst <= 1e-5 * scale.max(1.0) * w,
        "guided output off by {worst}"
    );
    assert!(cond != uncond, "labels must change the prediction");
    // Odd f16 half-batches (not whole 4-byte words: packed f16 halves share words) are
    // combined like any other.
    let m16 = UNet2DModel::load(
        gpu,
        UNet2DConfig::from_json(
            &serde_json::json!({
                "sample_size": 2, "in_channels": 1, "out_channels": 1, "block_out_channels": [4],
                "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"], "norm_num_groups": 2,
                "layers_per_block": 1, "num_class_embeds": 2, "mid_block_type": null
            }),
            "cfg16",
        )
        .unwrap(),
        &RandomWeights { seed: 1 },
        DType::F16,
    )
    .unwrap();
    let mut g16 = GuidedUNet::new(
        gpu,
        m16.prepare(gpu, 2, 1, 1).unwrap(),
        Prediction::Epsilon,
        &[0],
        1,
        2.0,
    )
    .unwrap();
    g16.input().write_f32(gpu, &[0.75]).unwrap();
    g16.run(gpu, time).unwrap();
    let got = g16.output().to_vec_f32(gpu).unwrap();
    let one = m16.prepare(gpu, 1, 1, 1).unwrap();
    let c = one
        .forward_host(gpu, &[0.75], &[321.0], Some(&[0]))
        .unwrap();
    let u = one
        .forward_host(gpu, &[0.75], &[321.0], Some(&[1]))
        .unwrap();
    let want = -u[0] + 2.0 * c[0];
    println!("f16 odd half-batch: {} vs {want}", got[0]);
    assert!(
        (got[0] - want).abs() <= 4e-3 * want.abs().max(1.0),
        "{} vs {want}",
        got[0]
    );
}
