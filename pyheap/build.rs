//! Exposes the target interpreter's version as `Py_3_X` cfgs (the hook differs by version).
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
