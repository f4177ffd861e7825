//! MobileNetV2-tiny, the shared Fashion-MNIST reference's architecture
//! (Sandler et al.'s inverted residuals, scaled down for 28×28 inputs):
//!
//! ```text
//! features.0-2   conv 3×3 1→16 ─ BN ─ ReLU6                         28×28
//! features.3     t=1: dw 3×3 16 ─ BN ─ ReLU6 ─ pw 16→16 ─ BN  (+x)   28×28
//! features.4     t=4: pw 16→64 ─ BN ─ ReLU6 ─ dw 3×3 s2 ─ BN ─ ReLU6 ─ pw →24 ─ BN   14×14
//! features.5     t=4: 24→96→24 (+x)
//! features.6     t=4: 24→96→32, s2                                     7×7
//! features.7     t=4: 32→128→32 (+x)
//! features.8     t=4: 32→128→64, s2                                    4×4
//! features.9     t=4: 64→256→64 (+x)
//! features.10-12 pw 64→128 ─ BN ─ ReLU6 ─ GlobalAveragePool ─ classifier 128→10
//! ```
//!
//! Convolutions have no bias (each feeds a BatchNorm). The `_relu` variant uses
//! ReLU instead of ReLU6 (cross-layer equalisation is exact across ReLU).

use super::Net;

/// (input channels, expansion, output channels, stride) of features.3..=9.
const BLOCKS: [(usize, usize, usize, usize); 7] = [
    (16, 1, 16, 1),
    (16, 4, 24, 2),
    (24, 4, 24, 1),
    (24, 4, 32, 2),
    (32, 4, 32, 1),
    (32, 4, 64, 2),
    (64, 4, 64, 1),
];

pub(super) fn mobilenetv2_tiny(net: &mut Net, x: &str, relu6: bool) -> String {
    let act = |net: &mut Net, out: &str, x: &str| {
        if relu6 {
            net.relu6(out, x)
        } else {
            net.relu(out, x)
        }
    };
    let x = net.conv("features.0", x, 1, 16, 3, 1, 1, 1, false);
    let x = net.batch_norm("features.1", &x, 16);
    let mut x = act(net, "features.2", &x);
    for (b, &(cin, t, cout, stride)) in BLOCKS.iter().enumerate() {
        let m = format!("features.{}.conv", b + 3);
        let hidden = cin * t;
        let mut y = x.clone();
        let mut k = 0;
        if t != 1 {
            y = net.conv(&format!("{m}.0"), &y, cin, hidden, 1, 1, 0, 1, false);
            y = net.batch_norm(&format!("{m}.1"), &y, hidden);
            y = act(net, &format!("{m}.2"), &y);
            k = 3;
        }
        y = net.conv(
            &format!("{m}.{k}"),
            &y,
            hidden,
            hidden,
            3,
            stride,
            1,
            hidden,
            false,
        );
        y = net.batch_norm(&format!("{m}.{}", k + 1), &y, hidden);
        y = act(net, &format!("{m}.{}", k + 2), &y);
        y = net.conv(
            &format!("{m}.{}", k + 3),
            &y,
            hidden,
            cout,
            1,
            1,
            0,
            1,
            false,
        );
        y = net.batch_norm(&format!("{m}.{}", k + 4), &y, cout);
        x = if stride == 1 && cin == cout {
            net.add(&format!("features.{}", b + 3), &x, &y)
        } else {
            y
        };
    }
    let x = net.conv("features.10", &x, 64, 128, 1, 1, 0, 1, false);
    let x = net.batch_norm("features.11", &x, 128);
    let x = act(net, "features.12", &x);
    let x = net.global_avg_pool("pool", &x);
    let x = net.flatten("flatten", &x);
    net.linear("classifier", &x, 128, 10)
}
