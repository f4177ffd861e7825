//! `.npy`/`.npz` files written by NumPy itself (fixtures/make_npy_fixtures.py)
//! read back to the values NumPy was given, and our writer reproduces NumPy's
//! bytes exactly.

use shrink_data::npy::{encode_npy, read_npy, read_npz, write_npy, write_npz, Order};
use shrink_tensor::{f16, Tensor};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn arange24() -> Vec<f64> {
    (0..24).map(|i| i as f64).collect()
}

#[test]
fn numpy_files_read_back_to_their_values() {
    let t = read_npy(fixture("c_f32.npy")).unwrap();
    assert_eq!(t.shape(), &[2, 3, 4]);
    let want: Vec<f32> = arange24().iter().map(|&v| (v * 0.5 - 3.0) as f32).collect();
    assert_eq!(t.as_slice::<f32>().unwrap(), &want[..]);

    // Fortran order comes back row-major.
    let t = read_npy(fixture("fortran_f64.npy")).unwrap();
    assert_eq!(t.shape(), &[2, 3, 4]);
    let want: Vec<f64> = arange24().iter().map(|&v| v * 0.25).collect();
    assert_eq!(t.as_slice::<f64>().unwrap(), &want[..]);

    let t = read_npy(fixture("big_i32.npy")).unwrap();
    let want: Vec<i32> = (0..24).map(|i| i - 12).collect();
    assert_eq!(t.as_slice::<i32>().unwrap(), &want[..]);

    let t = read_npy(fixture("big_f32_fortran.npy")).unwrap();
    let want: Vec<f32> = (0..24).map(|i| i as f32 * 1.5).collect();
    assert_eq!(t.as_slice::<f32>().unwrap(), &want[..]);

    let t = read_npy(fixture("f16.npy")).unwrap();
    assert_eq!(t.shape(), &[3, 2]);
    let want: Vec<f16> = (0..6)
        .map(|i| f16::from_f32(i as f32 * 0.5 - 1.0))
        .collect();
    assert_eq!(t.as_slice::<f16>().unwrap(), &want[..]);

    let t = read_npy(fixture("u16.npy")).unwrap();
    assert_eq!(t.as_slice::<u16>().unwrap(), &[0, 1000, 2000, 3000, 4000]);
    let t = read_npy(fixture("i8.npy")).unwrap();
    assert_eq!(t.as_slice::<i8>().unwrap(), &[-2, -1, 0, 1, 2]);
    let t = read_npy(fixture("u64.npy")).unwrap();
    assert_eq!(t.as_slice::<u64>().unwrap(), &[0, 1 << 62, 1 << 63]);
    let t = read_npy(fixture("bool.npy")).unwrap();
    assert_eq!(
        t.as_slice::<bool>().unwrap(),
        &[true, false, false, true, false, false]
    );

    let t = read_npy(fixture("scalar_i64.npy")).unwrap();
    assert_eq!(t.shape(), &[] as &[usize]);
    assert_eq!(t.as_slice::<i64>().unwrap(), &[-5]);
    let t = read_npy(fixture("empty_f32.npy")).unwrap();
    assert_eq!(t.shape(), &[0, 4]);
    assert!(t.is_empty());
}

#[test]
fn writer_matches_numpy_bytes() {
    for name in [
        "c_f32.npy",
        "f16.npy",
        "u16.npy",
        "i8.npy",
        "u64.npy",
        "bool.npy",
        "scalar_i64.npy",
        "empty_f32.npy",
    ] {
        let numpy_bytes = std::fs::read(fixture(name)).unwrap();
        let t = read_npy(fixture(name)).unwrap();
        assert_eq!(encode_npy(&t, Order::C).unwrap(), numpy_bytes, "{name}");
    }
    // A Fortran-order little-endian file re-encodes to NumPy's bytes too.
    let numpy_bytes = std::fs::read(fixture("fortran_f64.npy")).unwrap();
    let t = read_npy(fixture("fortran_f64.npy")).unwrap();
    assert_eq!(encode_npy(&t, Order::Fortran).unwrap(), numpy_bytes);
}

#[test]
fn npz_stored_and_deflated() {
    for name in ["stored.npz", "deflated.npz"] {
        let arrays = read_npz(fixture(name)).unwrap();
        let keys: Vec<&str> = arrays.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["x", "y"], "{name}");
        let x = arrays[0].1.to_f64_vec();
        let scale = if name == "stored.npz" { 1.0 } else { 0.5 };
        assert_eq!(x, (0..12).map(|i| i as f64 * scale).collect::<Vec<_>>());
        assert_eq!(arrays[0].1.shape(), &[3, 4]);
        assert_eq!(arrays[1].1.as_slice::<i64>().unwrap(), &[0, 1, 2]);
    }
}

#[test]
fn files_round_trip_through_disk() {
    let dir = std::env::temp_dir().join(format!("shrink-npy-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = Tensor::from_vec(vec![2, 2], vec![1.0f32, -2.0, 3.5, 4.0]).unwrap();
    let b = Tensor::from_vec(vec![0], Vec::<i64>::new()).unwrap();
    let p = dir.join("a.npy");
    write_npy(&p, &a).unwrap();
    assert_eq!(read_npy(&p).unwrap(), a);
    for compress in [false, true] {
        let z = dir.join(format!("ab{compress}.npz"));
        write_npz(&z, &[("a", &a), ("b", &b)], compress).unwrap();
        let back = read_npz(&z).unwrap();
        assert_eq!(
            back,
            vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())]
        );
    }
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    // Errors name the file.
    let bad = dir.join("corrupt.npy");
    std::fs::write(&bad, b"\x93NUMPY\x01\x00garbage").unwrap();
    assert!(read_npy(&bad)
        .unwrap_err()
        .to_string()
        .contains("corrupt.npy"));
    let bad = dir.join("corrupt.npz");
    std::fs::write(&bad, b"PK not really").unwrap();
    assert!(read_npz(&bad)
        .unwrap_err()
        .to_string()
        .contains("corrupt.npz"));
    std::fs::remove_dir_all(&dir).unwrap();
}
