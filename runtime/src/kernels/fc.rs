//! Fully connected layer: `y[o] = clamp(requant_o(b[o] + sum_i (x[i] - zp_in) * w[o, i]) + zp_out)`.

use super::Stage;

/// `weights` is `[out, in]` row-major; `input.len()` is `in`, `output.len()` is `out`.
pub fn fully_connected(input: &[i8], in_zp: i32, weights: &[i8], st: &Stage, output: &mut [i8]) {
    let n_in = input.len();
    for (o, (y, w)) in output
        .iter_mut()
        .zip(weights.chunks_exact(n_in))
        .enumerate()
    {
        let (bias, rq) = st.channel(o);
        let mut xw = 0i32;
        let mut sw = 0i32;
        for (&a, &b) in input.iter().zip(w) {
            xw += a as i32 * b as i32;
            sw += b as i32;
        }
        *y = st.finish(bias + xw - in_zp * sw, rq);
    }
}
