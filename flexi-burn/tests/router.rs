//! The router: learning a separable problem, noise only in training, the class -> rank map.

mod common;

use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};
use common::*;
use flexi_burn::{ClassRankMap, FlexiError, Phase, RouterConfig, masked_mean_pool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const D: usize = 16;

/// Two Gaussian blobs whose means differ along every dimension: class = which blob.
fn blobs(n: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut xs = Vec::with_capacity(n * D);
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 2;
        let mean = if class == 0 { -0.5 } else { 0.5 };
        for _ in 0..D {
            xs.push(mean + rng.random_range(-1.0f32..1.0));
        }
        ys.push(class);
    }
    (xs, ys)
}

#[test]
fn router_learns_a_separable_toy_problem() {
    let device = Default::default();
    CpuAd::seed(&device, 7);
    for hidden in [None, Some(32)] {
        let mut router = RouterConfig::new(D)
            .with_hidden(hidden)
            .with_noise_std(0.5)
            .init::<CpuAd>(&device);
        let mut optim = AdamConfig::new().init();
        let mut rng = StdRng::seed_from_u64(1);
        let (xs, ys) = blobs(256, 2);
        let x = Tensor::<CpuAd, 2>::from_data(TensorData::new(xs, [256, D]), &device);
        for _ in 0..150 {
            let loss = router.loss(router.forward(x.clone()), &ys, Phase::Train, &mut rng);
            let grads = GradientsParams::from_grads(loss.backward(), &router);
            router = optim.step(5e-2, router, grads);
        }
        let (xt, yt) = blobs(400, 3);
        let xt = Tensor::<CpuAd, 2>::from_data(TensorData::new(xt, [400, D]), &device);
        let pred = router.predict(xt.clone());
        let ranks = router.route(xt, &"(2,8)".parse().unwrap()).unwrap();
        assert!(pred.iter().zip(&ranks).all(|(c, r)| *r == [2, 8][*c]));
        let three: ClassRankMap = "(1,4,8)".parse().unwrap();
        assert!(
            router
                .route(Tensor::zeros([1, D], &device), &three)
                .is_err()
        );
        let correct = pred.iter().zip(&yt).filter(|(p, y)| p == y).count();
        let acc = correct as f64 / yt.len() as f64;
        assert!(acc >= 0.95, "hidden {hidden:?}: held-out accuracy {acc}");
    }
}

use burn::tensor::backend::Backend;

#[test]
fn noisy_loss_only_in_training() {
    let device = Default::default();
    let router = RouterConfig::new(4)
        .with_noise_std(1.0)
        .init::<Cpu>(&device);
    let logits_v = vec![2.0f32, -1.0, 0.5, 0.5, -3.0, 1.0];
    let logits = Tensor::<Cpu, 2>::from_data(TensorData::new(logits_v.clone(), [3, 2]), &device);
    let labels = [0usize, 1, 1];
    // Hand-computed cross entropy of the clean logits.
    let ce = |a: f32, b: f32, y: usize| {
        let lse = (a.exp() + b.exp()).ln();
        lse - if y == 0 { a } else { b }
    };
    let want = (ce(2.0, -1.0, 0) + ce(0.5, 0.5, 1) + ce(-3.0, 1.0, 1)) / 3.0;

    let mut rng = StdRng::seed_from_u64(5);
    let before = rng.clone();
    let eval = to_vec(router.loss(logits.clone(), &labels, Phase::Inference, &mut rng))[0];
    assert!(
        (eval - want).abs() <= 1e-6,
        "inference loss {eval} vs hand-computed {want}"
    );
    assert_eq!(rng, before, "inference must not draw noise");

    let train1 = to_vec(router.loss(
        logits.clone(),
        &labels,
        Phase::Train,
        &mut StdRng::seed_from_u64(5),
    ))[0];
    let train2 = to_vec(router.loss(
        logits.clone(),
        &labels,
        Phase::Train,
        &mut StdRng::seed_from_u64(5),
    ))[0];
    assert_eq!(train1, train2, "same seed, same noise");
    assert!(
        (train1 - want).abs() > 1e-3,
        "training loss must include noise: {train1} vs {want}"
    );

    // Zero noise std: training loss is the clean loss.
    let quiet = RouterConfig::new(4)
        .with_noise_std(0.0)
        .init::<Cpu>(&device);
    let l = to_vec(quiet.loss(logits, &labels, Phase::Train, &mut rng))[0];
    assert!((l - want).abs() <= 1e-6);
    // Prediction is the argmax of the clean logits (checked through log_softmax ordering).
    let lp = to_vec(log_softmax(
        Tensor::<Cpu, 2>::from_data(TensorData::new(logits_v, [3, 2]), &device),
        1,
    ));
    assert!(lp[0] > lp[1] && lp[5] > lp[4]);
}

#[test]
fn masked_mean_pool_ignores_padding() {
    let device = Default::default();
    // batch 2, seq 3, d 2; sample 0 has 2 real tokens, sample 1 has 3.
    let e = Tensor::<Cpu, 3>::from_data(
        TensorData::new(
            vec![
                1.0f32, 2.0, 3.0, 4.0, 100.0, 100.0, 1.0, 1.0, 2.0, 2.0, 3.0, 6.0,
            ],
            [2, 3, 2],
        ),
        &device,
    );
    let m = Tensor::<Cpu, 2>::from_data(
        TensorData::new(vec![1.0f32, 1.0, 0.0, 1.0, 1.0, 1.0], [2, 3]),
        &device,
    );
    assert_eq!(to_vec(masked_mean_pool(e, m)), vec![2.0, 3.0, 2.0, 3.0]);
}

#[test]
fn class_rank_map_parses_and_maps() {
    let m: ClassRankMap = "(2,8)".parse().unwrap();
    assert_eq!(m, ClassRankMap(vec![2, 8]));
    assert_eq!(m.to_string(), "(2,8)");
    assert_eq!(
        "1, 8"
            .parse::<ClassRankMap>()
            .unwrap()
            .ranks(&[1, 0, 1])
            .unwrap(),
        vec![8, 1, 8]
    );
    assert_eq!(m.max_rank(), 8);
    assert_eq!(
        m.ranks(&[2]).unwrap_err(),
        FlexiError::UnknownClass {
            class: 2,
            classes: 2
        }
    );
    let err = "(2,x)".parse::<ClassRankMap>().unwrap_err().to_string();
    assert!(err.contains("\"x\" is not a non-negative integer"), "{err}");
    assert!("(4)".parse::<ClassRankMap>().is_err());
    let bad = RouterConfig::new(8)
        .with_num_classes(1)
        .try_init::<Cpu>(&Default::default())
        .unwrap_err();
    assert!(bad.to_string().contains("num_classes = 1"), "{bad}");
}

#[test]
fn input_standardisation_uses_the_training_statistics() {
    // Features with offsets 100 + j and spreads 0.01 (j + 1): the standardised router equals
    // the plain router applied to (x - mean) / std, with hand-computed statistics.
    let device = Default::default();
    let rows: Vec<Vec<f32>> = (0..4)
        .map(|i| {
            (0..D)
                .map(|j| 100.0 + j as f32 + 0.01 * (j + 1) as f32 * [-1.5, -0.5, 0.5, 1.5][i])
                .collect()
        })
        .collect();
    // mean = 100 + j, population std = 0.01 (j + 1) * sqrt(1.25).
    let by_hand: Vec<f32> = rows
        .iter()
        .flat_map(|r| {
            r.iter()
                .enumerate()
                .map(|(j, v)| (v - (100.0 + j as f32)) / (0.01 * (j + 1) as f32 * 1.25f32.sqrt()))
        })
        .collect();
    let x = |v: Vec<f32>| Tensor::<Cpu, 2>::from_data(TensorData::new(v, [4, D]), &device);
    let cfg = RouterConfig::new(D).with_hidden(Some(4));
    let plain = cfg.init::<Cpu>(&device);
    // (Evaluated before its layers are cloned: Burn initialises parameters lazily, and a clone
    // of an uninitialised parameter draws its own values.)
    let want = plain
        .forward(x(by_hand))
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let mut std_router = cfg
        .clone()
        .with_standardize(true)
        .init::<Cpu>(&device)
        .with_input_stats(&rows);
    std_router.hidden = plain.hidden.clone();
    std_router.output = plain.output.clone();
    let got = std_router
        .forward(x(rows.concat()))
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-3, "{got:?} vs {want:?}");
    }
    // A router built without standardisation ignores the statistics.
    let same = cfg.init::<Cpu>(&device).with_input_stats(&rows);
    assert!(same.input_norm.is_none());
}

#[test]
fn nan_features_are_an_error_not_a_silent_class() {
    // argmax over NaN logits picks index 0: routing such an input would silently give it
    // the easy class's rank.
    let device = Default::default();
    let router = RouterConfig::new(4).init::<Cpu>(&device);
    let map: ClassRankMap = "(2,8)".parse().unwrap();
    let ok = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![0.5f32; 8], [2, 4]), &device);
    assert_eq!(router.route(ok, &map).unwrap().len(), 2);
    let mut v = vec![0.5f32; 8];
    v[5] = f32::NAN;
    let bad = Tensor::<Cpu, 2>::from_data(TensorData::new(v, [2, 4]), &device);
    let err = router.route(bad, &map).unwrap_err();
    assert!(
        matches!(err, FlexiError::NonFiniteRouterOutput { sample: 1, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("sample 1 is not a number"),
        "{err}"
    );
}
