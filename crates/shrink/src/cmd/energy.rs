//! `shrink energy MODEL`: energy of one inference on a 45 nm accelerator model
//! (Horowitz ISSCC 2014 costs; see `shrink-energy`) for a precision choice,
//! split into compute / on-chip SRAM / off-chip DRAM; `--sweep` explores
//! weight × activation widths 1..=8 over several SRAM sizes (Moons et al. 2017).

use crate::model;
use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use shrink_energy::memory::{parse_size, sram_pj_per_64b};
use shrink_energy::sweep::DEFAULT_SRAM;
use shrink_energy::{estimate, layer_work, sweep, Assignment, MemoryConfig, Precision};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Model file (.onnx) or model directory.
    pub model: PathBuf,
    /// Weight precision: fp32, fp16, bf16, int1..int32, positN[eE], flex16.
    #[arg(long, default_value = "fp32")]
    pub weights: String,
    /// Activation precision (same names).
    #[arg(long, default_value = "fp32")]
    pub acts: String,
    /// On-chip SRAM capacity, e.g. 256KiB, 1MiB.
    #[arg(long, default_value = "256KiB")]
    pub sram: String,
    /// DRAM energy per 64 bits in pJ (Horowitz: 1300–2600).
    #[arg(long, default_value_t = 1300.0)]
    pub dram_pj: f64,
    /// Fraction of zero (skipped) weights, 0..1.
    #[arg(long, default_value_t = 0.0)]
    pub sparsity: f64,
    /// Index bits per non-zero weight when sparse.
    #[arg(long, default_value_t = 0)]
    pub index_bits: u32,
    /// Sweep weight/activation widths 1..=8 over SRAM sizes 32KiB..4MiB (plus --sram).
    #[arg(long)]
    pub sweep: bool,
    /// In the sweep, the least width the minimum may use (accuracy floor).
    #[arg(long, default_value_t = 1)]
    pub min_bits: u32,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

fn nj(pj: f64) -> String {
    format!("{:.1}", pj / 1000.0)
}

pub fn run(args: Args) -> Result<()> {
    let g = model::load(&args.model)?;
    let layers =
        layer_work(&g).with_context(|| format!("{}: counting layer work", args.model.display()))?;
    if layers.is_empty() {
        anyhow::bail!(
            "{}: no Conv/Gemm/MatMul layers to price",
            args.model.display()
        );
    }
    let sram = parse_size(&args.sram)?;
    if !(0.0..=1.0).contains(&args.sparsity) {
        anyhow::bail!("--sparsity must be in 0..1, got {}", args.sparsity);
    }
    if args.sweep {
        let mut sizes: Vec<u64> = DEFAULT_SRAM.to_vec();
        if !sizes.contains(&sram) {
            sizes.push(sram);
            sizes.sort();
        }
        let r = sweep(&layers, &sizes, args.dram_pj, args.min_bits);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
            return Ok(());
        }
        println!(
            "Energy per inference (nJ), integer weights × activations, w = a = Q, per SRAM size:"
        );
        print!("{:>10}", "SRAM");
        for q in 1..=8 {
            print!(" {:>9}", format!("Q={q}"));
        }
        println!("   minimum (w,a ≥ {})", args.min_bits);
        for (i, &s) in sizes.iter().enumerate() {
            print!("{:>10}", format!("{}KiB", s >> 10));
            for q in 1..=8u32 {
                let c = r
                    .cells
                    .iter()
                    .find(|c| c.sram_bytes == s && c.weight_bits == q && c.act_bits == q)
                    .expect("cell");
                print!(" {:>9}", nj(c.total_pj));
            }
            let m = &r.minimum[i];
            println!("   w{}a{} {} nJ", m.weight_bits, m.act_bits, nj(m.total_pj));
        }
        println!(
            "\nFull grid at SRAM {} (rows: weight bits, columns: activation bits), nJ:",
            args.sram
        );
        print!("{:>4}", "w\\a");
        for a in 1..=8 {
            print!(" {a:>9}");
        }
        println!();
        for w in 1..=8u32 {
            print!("{w:>4}");
            for a in 1..=8u32 {
                let c = r
                    .cells
                    .iter()
                    .find(|c| c.sram_bytes == sram && c.weight_bits == w && c.act_bits == a)
                    .expect("cell");
                print!(" {:>9}", nj(c.total_pj));
            }
            println!();
        }
        println!("\nEnergy alone always favours fewer bits; the QNN minimum is taken at equal accuracy (raise --min-bits to the least width that keeps accuracy).");
        return Ok(());
    }
    let w: Precision = args.weights.parse()?;
    let a: Precision = args.acts.parse()?;
    let mut asg = Assignment::uniform(w, a);
    asg.weight_sparsity = args.sparsity;
    asg.index_bits = args.index_bits;
    let mem = MemoryConfig {
        sram_bytes: sram,
        dram_pj_per_64b: args.dram_pj,
    };
    let r = estimate(&layers, &asg, &mem);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "weights {w}, activations {a}, SRAM {} ({:.1} pJ/64 bit), DRAM {:.0} pJ/64 bit, MAC {:.4} pJ",
        args.sram,
        sram_pj_per_64b(sram as f64),
        args.dram_pj,
        shrink_energy::precision::mac(w, a).pj()
    );
    println!(
        "{:<24} {:>8} {:>12} {:>11} {:>8} {:>11} {:>11} {:>11} {:>11}",
        "layer",
        "op",
        "MACs",
        "weight kB",
        "weights",
        "compute nJ",
        "on-chip nJ",
        "off-chip nJ",
        "total nJ"
    );
    for l in &r.layers {
        println!(
            "{:<24} {:>8} {:>12} {:>11.1} {:>8} {:>11} {:>11} {:>11} {:>11}",
            l.name,
            l.op,
            l.macs,
            l.weight_bytes / 1000.0,
            if l.weights_on_chip { "SRAM" } else { "DRAM" },
            nj(l.energy.compute_pj),
            nj(l.energy.onchip_pj),
            nj(l.energy.offchip_pj),
            nj(l.energy.total_pj())
        );
    }
    println!(
        "{:<24} {:>8} {:>12} {:>11.1} {:>8} {:>11} {:>11} {:>11} {:>11}",
        "total",
        "",
        r.macs,
        r.weight_bytes / 1000.0,
        "",
        nj(r.total.compute_pj),
        nj(r.total.onchip_pj),
        nj(r.total.offchip_pj),
        nj(r.total.total_pj())
    );
    Ok(())
}
