//! ResNet-20 for 32×32 inputs (He et al. 2016, §4.2: 3 stages of 3 basic blocks,
//! 16/32/64 channels). Where a block changes shape, the shortcut is a 1×1
//! strided convolution with BatchNorm (the paper's option B), which keeps the
//! graph to plain ONNX ops with a gradient everywhere.
//!
//! ```text
//! conv1 3×3 3→16 ─ bn1 ─ ReLU
//! layer{1,2,3}.{0,1,2}: conv1 3×3 ─ bn1 ─ ReLU ─ conv2 3×3 ─ bn2 ─ (+ shortcut) ─ ReLU
//! GlobalAveragePool ─ fc 64→10
//! ```

use super::Net;

pub(super) fn resnet20(net: &mut Net, x: &str) -> String {
    let x = net.conv("conv1", x, 3, 16, 3, 1, 1, 1, false);
    let x = net.batch_norm("bn1", &x, 16);
    let mut x = net.relu("relu", &x);
    let mut cin = 16;
    for (stage, cout) in [16usize, 32, 64].into_iter().enumerate() {
        for block in 0..3 {
            let m = format!("layer{}.{block}", stage + 1);
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let y = net.conv(&format!("{m}.conv1"), &x, cin, cout, 3, stride, 1, 1, false);
            let y = net.batch_norm(&format!("{m}.bn1"), &y, cout);
            let y = net.relu(&format!("{m}.relu1"), &y);
            let y = net.conv(&format!("{m}.conv2"), &y, cout, cout, 3, 1, 1, 1, false);
            let y = net.batch_norm(&format!("{m}.bn2"), &y, cout);
            let shortcut = if stride != 1 || cin != cout {
                let s = net.conv(
                    &format!("{m}.shortcut.0"),
                    &x,
                    cin,
                    cout,
                    1,
                    stride,
                    0,
                    1,
                    false,
                );
                net.batch_norm(&format!("{m}.shortcut.1"), &s, cout)
            } else {
                x.clone()
            };
            let sum = net.add(&format!("{m}.add"), &y, &shortcut);
            x = net.relu(&format!("{m}.relu2"), &sum);
            cin = cout;
        }
    }
    let x = net.global_avg_pool("pool", &x);
    let x = net.flatten("flatten", &x);
    net.linear("fc", &x, 64, 10)
}
