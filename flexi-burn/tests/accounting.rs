//! Parameter accounting against the paper's numbers (SPEC 4) and rank schedules.

mod common;

use common::*;
use flexi_burn::params::{AdaptedLinear, LlamaShape};
use flexi_burn::{
    FlexiError, FlexiLinearConfig, ParamCount, Phase, RankSampler, RankSchedule,
    average_activated_params, params_per_rank,
};

const QKVO: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

#[test]
fn llama_lora_parameter_counts_match_the_paper() {
    let one_b = LlamaShape::llama_3_2_1b().adapted(&QKVO).unwrap();
    let per_rank = params_per_rank(&one_b);
    assert_eq!(per_rank, 212_992);
    assert_eq!(average_activated_params(per_rank, &[4]), 851_968.0);
    assert_eq!(average_activated_params(per_rank, &[8; 3]), 1_703_936.0);
    let three_b = LlamaShape::llama_3_2_3b().adapted(&QKVO).unwrap();
    assert_eq!(params_per_rank(&three_b), 573_440);
    assert_eq!(
        average_activated_params(params_per_rank(&three_b), &[4]),
        2_293_760.0
    );
    // Flexi (2,8) at 504K means about 6 % of inputs at rank 8: 50 of 800 inputs -> 505,856.
    let mut ranks = vec![2usize; 750];
    ranks.extend([8; 50]);
    assert_eq!(average_activated_params(per_rank, &ranks), 505_856.0);
    assert!(LlamaShape::llama_3_2_1b().adapted(&["qkv"]).is_err());
}

#[test]
fn module_accounting_agrees_with_the_shape_formula() {
    let device = Default::default();
    // One Llama-3.2-1B k_proj: 2048 -> 512, rank 8.
    let layer = FlexiLinearConfig::new(2048, 512, 8).init::<CpuAd>(&device);
    let count = ParamCount::of(&layer);
    assert_eq!(count.trainable, 8 * (2048 + 512));
    assert_eq!(count.total, 2048 * 512 + 8 * (2048 + 512));
    let shape = AdaptedLinear {
        name: "k_proj".into(),
        d_in: 2048,
        d_out: 512,
    };
    assert_eq!(layer.params_per_rank(), shape.params_per_rank());
    assert!((count.trainable_percent() - 100.0 * 20480.0 / 1_069_056.0).abs() < 1e-9);
    // Walking a module tree finds every FlexiLinear: a vector of the four 1B projections.
    let layers: Vec<flexi_burn::FlexiLinear<Cpu>> =
        [(2048, 2048), (2048, 512), (2048, 512), (2048, 2048)]
            .iter()
            .map(|&(i, o)| FlexiLinearConfig::new(i, o, 2).init::<Cpu>(&device))
            .collect();
    assert_eq!(flexi_burn::params::lora_params_per_rank(&layers), 13_312);
}

#[test]
fn schedules_draw_ranks_as_the_paper_says() {
    // LoRA-r: fixed everywhere.
    let mut s = RankSampler::new(RankSchedule::Fixed { rank: 4 }, 0);
    assert_eq!(
        s.ranks(3, Phase::Train, None).unwrap().as_slice(),
        &[4, 4, 4]
    );

    // DyLoRA: one uniform rank per step for the batch in training, fixed at inference.
    let dylora = RankSchedule::DyLoRA {
        r_max: 8,
        frozen: true,
        eval_rank: 4,
    };
    let mut s = RankSampler::new(dylora.clone(), 42);
    let mut seen = [0usize; 9];
    for _ in 0..800 {
        let r = s.ranks(5, Phase::Train, None).unwrap();
        assert!(r.frozen_prefix());
        assert!(
            r.as_slice().iter().all(|x| *x == r.as_slice()[0]),
            "one rank per step"
        );
        seen[r.as_slice()[0]] += 1;
        assert_eq!(
            s.ranks(2, Phase::Inference, None).unwrap().as_slice(),
            &[4, 4]
        );
    }
    assert_eq!(seen[0], 0);
    for (r, n) in seen.iter().enumerate().skip(1) {
        assert!(
            (60..=140).contains(n),
            "rank {r} drawn {n} times of 800 (uniform: 100)"
        );
    }
    // Reproducible from the seed.
    let draw = |seed| {
        let mut s = RankSampler::new(dylora.clone(), seed);
        (0..20)
            .map(|_| s.ranks(1, Phase::Train, None).unwrap().as_slice()[0])
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));

    // DyLoRA+: random at inference as well.
    let mut s = RankSampler::new(RankSchedule::DyLoRAPlus { r_max: 8 }, 3);
    let inf: Vec<usize> = (0..50)
        .map(|_| s.ranks(2, Phase::Inference, None).unwrap().as_slice()[0])
        .collect();
    assert!(inf.iter().any(|r| *r != inf[0]) && inf.iter().all(|r| (1..=8).contains(r)));

    // Routed: exactly the router's ranks, in both phases.
    let mut s = RankSampler::new(RankSchedule::Routed, 0);
    for phase in [Phase::Train, Phase::Inference] {
        assert_eq!(
            s.ranks(3, phase, Some(&[2, 8, 2])).unwrap().as_slice(),
            &[2, 8, 2]
        );
    }
    assert_eq!(
        s.ranks(2, Phase::Train, Some(&[2])).unwrap_err(),
        FlexiError::BatchMismatch { ranks: 1, batch: 2 }
    );
    assert!(s.ranks(2, Phase::Train, None).is_err());
    assert_eq!(
        s.ranks(0, Phase::Train, Some(&[])).unwrap_err(),
        FlexiError::EmptyBatch
    );

    // Validation against the adapter.
    assert!(RankSchedule::Fixed { rank: 16 }.validate(8).is_err());
    assert!(
        RankSchedule::DyLoRA {
            r_max: 8,
            frozen: false,
            eval_rank: 4
        }
        .validate(8)
        .is_ok()
    );
    // Schedules round-trip through JSON configs.
    let json = serde_json::to_string(&RankSchedule::DyLoRAPlus { r_max: 8 }).unwrap();
    assert_eq!(json, r#"{"kind":"dylora_plus","r_max":8}"#);
    let back: RankSchedule =
        serde_json::from_str(r#"{"kind":"dylora","r_max":8,"frozen":false,"eval_rank":4}"#)
            .unwrap();
    assert_eq!(
        back,
        RankSchedule::DyLoRA {
            r_max: 8,
            frozen: false,
            eval_rank: 4
        }
    );
}

#[test]
fn activated_parameters_count_what_each_rank_computes_with() {
    use burn::module::Param;
    use burn::tensor::{Tensor, TensorData};
    let device = Default::default();
    // Two plain layers (per rank 2048 + 512 and 2048 + 2048) of r_max 4: rank r activates
    // r components of each.
    let plain: Vec<flexi_burn::FlexiLinear<Cpu>> = [(2048, 512), (2048, 2048)]
        .iter()
        .map(|&(i, o)| FlexiLinearConfig::new(i, o, 4).init::<Cpu>(&device))
        .collect();
    let table = flexi_burn::params::activated_params_by_rank(&plain);
    assert_eq!(table, vec![0, 6656, 13_312, 19_968, 26_624]);
    // Flexi (1,4) on three inputs: (6656 + 26624 + 26624) / 3.
    let avg = flexi_burn::params::average_activated_params_by_rank(&table, &[1, 4, 4]);
    assert_eq!(avg, (6656.0 + 2.0 * 26_624.0) / 3.0);
    // AdaLoRA (SVD form, init_r 4) pruned to components {0, 2} in the first layer and {1} in
    // the second: its r_max counts 2 * 2560 + 1 * 4096, not 4 of each.
    let mut svd: Vec<flexi_burn::FlexiLinear<Cpu>> = [(2048, 512), (2048, 2048)]
        .iter()
        .map(|&(i, o)| {
            FlexiLinearConfig::new(i, o, 4)
                .with_svd_form(true)
                .init::<Cpu>(&device)
        })
        .collect();
    for (layer, e) in svd
        .iter_mut()
        .zip([[0.5f32, 0.0, -0.1, 0.0], [0.0, 0.3, 0.0, 0.0]])
    {
        layer.lora_e = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(e.to_vec(), [4]),
            &device,
        )));
    }
    let table = flexi_burn::params::activated_params_by_rank(&svd);
    assert_eq!(
        table,
        vec![0, 2560, 2560 + 4096, 2 * 2560 + 4096, 2 * 2560 + 4096]
    );
}
