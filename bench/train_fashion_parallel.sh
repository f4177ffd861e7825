#!/bin/bash
# Every accuracy run of BENCHMARKS.md §8 (2026-11-26) at once, for a machine
# with >= 16 cores: shrink from scratch at Adam lr 3e-3 (cosine, batch 128),
# seeds 0 and 1, all four models; PyTorch CPU with the same recipe
# (bench/train_torch_reference.py) on the LeNets; `shrink finetune` of the
# shared PyTorch LeNet-5 models for one epoch. MobileNetV2-tiny runs with
# 4 threads (the long pole), the rest in 4 slots of 2 threads. One line per
# epoch goes to $OUT/all.log, prefixed with the job name; that is how
# bench/results/train/device_lr3e-3.log was made (paths adapted).
#
#   OUT=/tmp/acc bench/train_fashion_parallel.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/train}
SHRINK=${SHRINK_BIN:-target/release/shrink}
FASHION=${SHRINK_SHARED:-../shared}/data/fashion
export SHRINK FASHION PYTHONUNBUFFERED=1
mkdir -p /tmp/w "$OUT"
LOG=$OUT/all.log
{ nproc; uptime; python3 -c "import torch; print('torch', torch.__version__)"; grep -m1 "model name" /proc/cpuinfo; } >> $LOG 2>&1
sh_job() { # name threads extra-args...
  local name=$1 th=$2; shift 2
  local t0=$(date +%s)
  $SHRINK train --dataset fashion-mnist --batch 128 --optimizer adam --schedule cosine --threads $th "$@" -o /tmp/w/$name.onnx 2>&1 | sed -u "s/^/[$name] /" >> $LOG
  echo "[$name] done rc=${PIPESTATUS[0]} wall=$(( $(date +%s) - t0 ))s" >> $LOG
}
th_job() { # name model epochs lr seed
  local t0=$(date +%s)
  python3 bench/train_torch_reference.py $2 $3 --lr $4 --seed $5 --threads 2 2>&1 | sed -u "s/^/[$1] /" >> $LOG
  echo "[$1] done wall=$(( $(date +%s) - t0 ))s" >> $LOG
}
ft_job() { # name onnx
  $SHRINK finetune $FASHION/$2 --dataset fashion-mnist --epochs 1 --threads 2 -o /tmp/w/$1.onnx 2>&1 | sed -u "s/^/[$1] /" >> $LOG
}
export -f sh_job th_job ft_job; export LOG OUT
# MobileNetV2-tiny: 2 seeds, 4 threads each (8 cores), the long pole.
sh_job mnv2_s0 4 --model mobilenetv2_tiny --epochs 4 --lr 3e-3 --seed 0 &
sh_job mnv2_s1 4 --model mobilenetv2_tiny --epochs 4 --lr 3e-3 --seed 1 &
# Everything else: 4 slots of 2 threads (8 cores).
cat > /tmp/w/jobs <<'J'
sh_job lenet5_bn_s0 2 --model lenet5_bn --epochs 8 --lr 3e-3 --seed 0
sh_job lenet5_s0 2 --model lenet5 --epochs 8 --lr 3e-3 --seed 0
sh_job lenet5_bn_s1 2 --model lenet5_bn --epochs 8 --lr 3e-3 --seed 1
sh_job lenet5_s1 2 --model lenet5 --epochs 8 --lr 3e-3 --seed 1
sh_job lenet300100_s0 2 --model lenet300100 --epochs 8 --lr 3e-3 --seed 0
th_job torch_lenet5_s0 lenet5 8 3e-3 0
th_job torch_lenet5_bn_s0 lenet5_bn 8 3e-3 0
ft_job ft_lenet5 lenet5.onnx
ft_job ft_lenet5_bn lenet5_bn.onnx
sh_job lenet300100_s1 2 --model lenet300100 --epochs 8 --lr 3e-3 --seed 1
th_job torch_lenet5_s1 lenet5 8 3e-3 1
th_job torch_lenet5_bn_s1 lenet5_bn 8 3e-3 1
th_job torch_lenet300100_s0 lenet300100 8 3e-3 0
J
xargs -P 4 -d '\n' -I{} bash -c '{}' < /tmp/w/jobs
wait
echo ALL DONE >> $LOG
