//! LeCun et al.'s LeNets as in the shared Fashion-MNIST references.
//!
//! ```text
//! LeNet-300-100: Flatten ─ fc1 784→300 ─ ReLU ─ fc2 300→100 ─ ReLU ─ fc3 100→10
//! LeNet-5:       conv1 5×5×6 pad 2 ─ [bn1] ─ ReLU ─ MaxPool 2 ─ conv2 5×5×16 ─ [bn2] ─ ReLU ─ MaxPool 2
//!                ─ Flatten 400 ─ fc1 120 ─ ReLU ─ fc2 84 ─ ReLU ─ fc3 10
//! ```

use super::Net;

pub(super) fn lenet300100(net: &mut Net, x: &str) -> String {
    let x = net.flatten("flatten", x);
    let x = net.linear("fc1", &x, 784, 300);
    let x = net.relu("fc1/relu", &x);
    let x = net.linear("fc2", &x, 300, 100);
    let x = net.relu("fc2/relu", &x);
    net.linear("fc3", &x, 100, 10)
}

pub(super) fn lenet5(net: &mut Net, x: &str, bn: bool) -> String {
    let mut x = net.conv("conv1", x, 1, 6, 5, 1, 2, 1, true);
    if bn {
        x = net.batch_norm("bn1", &x, 6);
    }
    let x = net.relu("conv1/relu", &x);
    let x = net.max_pool("pool1", &x, 2);
    let mut x = net.conv("conv2", &x, 6, 16, 5, 1, 0, 1, true);
    if bn {
        x = net.batch_norm("bn2", &x, 16);
    }
    let x = net.relu("conv2/relu", &x);
    let x = net.max_pool("pool2", &x, 2);
    let x = net.flatten("flatten", &x);
    let x = net.linear("fc1", &x, 400, 120);
    let x = net.relu("fc1/relu", &x);
    let x = net.linear("fc2", &x, 120, 84);
    let x = net.relu("fc2/relu", &x);
    net.linear("fc3", &x, 84, 10)
}
