//! A small VGG-style CNN for 28×28 inputs: two stages of two 3×3 conv-BN-ReLU
//! layers and a 2×2 max-pool, then a two-layer classifier. Module indices
//! follow a PyTorch `nn.Sequential` (`features.N`, `classifier.N`).
//!
//! ```text
//! [conv 32 ─ BN ─ ReLU] ×2 ─ MaxPool ─ [conv 64 ─ BN ─ ReLU] ×2 ─ MaxPool
//! ─ Flatten 64·7·7 ─ Linear 128 ─ ReLU ─ Linear 10
//! ```

use super::Net;

pub(super) fn vgg_small(net: &mut Net, x: &str) -> String {
    let mut x = x.to_string();
    let mut cin = 1;
    let mut i = 0;
    for cout in [32, 64] {
        for _ in 0..2 {
            x = net.conv(&format!("features.{i}"), &x, cin, cout, 3, 1, 1, 1, false);
            x = net.batch_norm(&format!("features.{}", i + 1), &x, cout);
            x = net.relu(&format!("features.{}", i + 2), &x);
            cin = cout;
            i += 3;
        }
        x = net.max_pool(&format!("features.{i}"), &x, 2);
        i += 1;
    }
    let x = net.flatten("flatten", &x);
    let x = net.linear("classifier.0", &x, 64 * 7 * 7, 128);
    let x = net.relu("classifier.1", &x);
    net.linear("classifier.2", &x, 128, 10)
}
