"""numba.cuda kernels of compress, mirroring the CPU kernels (imported only on the GPU path).

Scalar math comes from `_scalar` (the same Python source the CPU kernels compile). Element-
parallel kernels use one thread per element, entry or quantization chunk; per-data-block kernels
(top-k, window statistics, the fused step) use one thread block per data block, striding over
blocks by the grid, each thread block owning one row of a global scratch. Launch sizes live in
`_launch.py`.
"""

import math

import numpy as np
from numba import cuda, int32, int64

from . import _scalar
from ._launch import THREADS
from ._scalar import BF16, F16, NARROW_LIMIT, NARROW_MIN_EPS, RADIX_BINS, RADIX_BITS

bf16_bits_to_f32 = cuda.jit(device=True)(_scalar.bf16_bits_to_f32_py)
f32_to_bf16_bits = cuda.jit(device=True)(_scalar.f32_to_bf16_bits_py)
f32_to_bf16_bits_outward = cuda.jit(device=True)(_scalar.f32_to_bf16_bits_outward_py)
f16_bits_to_f32 = cuda.jit(device=True)(_scalar.f16_bits_to_f32_py)
f32_to_f16_bits = cuda.jit(device=True)(_scalar.f32_to_f16_bits_py)
hash_uniform = cuda.jit(device=True)(_scalar.hash_uniform_py)
quant_code = cuda.jit(device=True)(_scalar.quant_code_py)
dequant_value = cuda.jit(device=True)(_scalar.dequant_value_py)
bucket_steps = cuda.jit(device=True)(_scalar.bucket_steps_py)


@cuda.jit(device=True)
def load_value(src, i, kind):
    if kind == BF16:
        return np.float64(bf16_bits_to_f32(src[i]))
    if kind == F16:
        return np.float64(f16_bits_to_f32(src[i]))
    return np.float64(src[i])


@cuda.jit(device=True)
def store_value(dst, i, v, kind):
    if kind == BF16:
        dst[i] = f32_to_bf16_bits(v)
    elif kind == F16:
        dst[i] = f32_to_f16_bits(v)
    else:
        dst[i] = v


@cuda.jit(device=True)
def load_bound(bounds, i, bf16):
    if bf16:
        return bf16_bits_to_f32(bounds[i])
    return np.float32(bounds[i])


@cuda.jit(device=True)
def read_code(codes, e, bits):
    if bits == 8:
        return int64(codes[e])
    return int64((codes[e >> 1] >> (4 - 4 * (e & 1))) & 15)


@cuda.jit(device=True)
def decode(codes, e, lo_arr, hi_arr, b, bits, bf16_bounds):
    lo = load_bound(lo_arr, b, bf16_bounds)
    hi = load_bound(hi_arr, b, bf16_bounds)
    _, unscale, base, step, _ = bucket_steps(lo, hi, (1 << bits) - 1)
    return dequant_value(read_code(codes, e, bits), step, base, unscale)


@cuda.jit(device=True)
def store_bounds(lo_out, hi_out, b, lo, hi, bf16):
    """Write bucket b's bounds (bf16 bits rounded outward, so they still contain [lo, hi]) and
    return the bounds as stored, which the codes must be computed against."""
    if bf16:
        lo_bits = f32_to_bf16_bits_outward(lo, False)
        hi_bits = f32_to_bf16_bits_outward(hi, True)
        lo_out[b] = lo_bits
        hi_out[b] = hi_bits
        return bf16_bits_to_f32(lo_bits), bf16_bits_to_f32(hi_bits)
    lo_out[b] = lo
    hi_out[b] = hi
    return lo, hi


@cuda.jit(device=True)
def quantize_bucket(
    src,
    src_first,
    first,
    n,
    codes,
    lo_out,
    hi_out,
    b,
    bits,
    bf16_bounds,
    stochastic,
    seed,
):
    """Quantize src[src_first : src_first + n] (elements first.. of the vector) by one thread."""
    lo = np.float32(src[src_first])
    hi = lo
    for j in range(1, n):
        v = np.float32(src[src_first + j])
        lo = min(lo, v)
        hi = max(hi, v)
    lo, hi = store_bounds(lo_out, hi_out, b, lo, hi, bf16_bounds)
    max_code = (1 << bits) - 1
    scale, _, base, _, inv_step = bucket_steps(lo, hi, max_code)
    for j in range(n):
        e = first + j
        offset = hash_uniform(seed, e) if stochastic else np.float32(0.5)
        c = quant_code(np.float32(src[src_first + j]), scale, base, inv_step, offset, max_code)
        if bits == 8:
            codes[e] = c
        elif e & 1 == 0:
            codes[e >> 1] = c << 4
        else:
            codes[e >> 1] = codes[e >> 1] | c


@cuda.jit
def quantize_kernel(x, codes, lo, hi, bits, bucket, bf16_bounds, stochastic, seed):
    """One thread per chunk of whole bytes (1 bucket, or 2 when 4-bit buckets are odd)."""
    per_chunk = 1 if (bits == 8 or bucket % 2 == 0) else 2
    c = cuda.grid(1)
    for b in range(c * per_chunk, min((c + 1) * per_chunk, lo.size)):
        start = b * bucket
        n = min(bucket, x.size - start)
        quantize_bucket(x, start, start, n, codes, lo, hi, b, bits, bf16_bounds, stochastic, seed)


@cuda.jit
def dequantize_kernel(codes, lo, hi, bits, bucket, bf16_bounds, out, add):
    """One thread per element: out[e] (+)= code·step + lo."""
    e = cuda.grid(1)
    if e < out.size:
        v = decode(codes, e, lo, hi, e // bucket, bits, bf16_bounds)
        if add:
            out[e] += v
        else:
            out[e] = v


@cuda.jit(device=True)
def block_threshold(bits, start, n, abs_mask, key_bits, k, hist, state):
    """Radix select by all threads of a block: exact k-th largest key of bits[start:start+n]
    and how many keys equal to it to take. Levels narrow a prefix of fixed top bits."""
    tid = cuda.threadIdx.x
    if tid == 0:
        state[0] = 0  # prefix: the threshold's bits above `high`
        state[1] = k  # keys still needed inside the prefix
    high = key_bits
    while high > 0:
        shift = max(high - RADIX_BITS, 0)
        for i in range(tid, RADIX_BINS, cuda.blockDim.x):
            hist[i] = 0
        cuda.syncthreads()
        prefix = np.uint64(state[0])
        width_mask = np.uint64((1 << (high - shift)) - 1)
        for i in range(tid, n, cuda.blockDim.x):
            key = np.uint64(bits[start + i] & abs_mask)
            if key >> np.uint64(high) == prefix:
                cuda.atomic.add(hist, int64((key >> np.uint64(shift)) & width_mask), 1)
        cuda.syncthreads()
        if tid == 0:
            need = state[1]
            above = 0
            b = (1 << (high - shift)) - 1
            while b > 0 and above + hist[b] < need:
                above += hist[b]
                b -= 1
            state[0] = (state[0] << (high - shift)) | b
            state[1] = need - above
        cuda.syncthreads()
        high = shift
    return state[0], state[1]


@cuda.jit(device=True)
def block_ordered_indices(
    bits, start, n, abs_mask, threshold, take_equal, indices, first, scan_gt, scan_eq
):
    """indices[first + r] = the r-th selected position (ascending): keys above threshold plus
    the first take_equal keys equal to it. Block-wide prefix sums over chunks of the block."""
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    gt_before = 0
    eq_before = 0
    for chunk in range(0, n, nt):
        i = chunk + tid
        gt = 0
        eq = 0
        if i < n:
            key = np.uint64(bits[start + i] & abs_mask)
            gt = 1 if key > threshold else 0
            eq = 1 if key == threshold else 0
        scan_gt[tid] = gt
        scan_eq[tid] = eq
        cuda.syncthreads()
        offset = 1
        while offset < nt:
            add_gt = scan_gt[tid - offset] if tid >= offset else 0
            add_eq = scan_eq[tid - offset] if tid >= offset else 0
            cuda.syncthreads()
            scan_gt[tid] += add_gt
            scan_eq[tid] += add_eq
            cuda.syncthreads()
            offset *= 2
        my_gt = gt_before + scan_gt[tid] - gt
        my_eq = eq_before + scan_eq[tid] - eq
        if gt == 1 or (eq == 1 and my_eq < take_equal):
            indices[first + my_gt + min(my_eq, take_equal)] = i
        gt_before += scan_gt[nt - 1]
        eq_before += scan_eq[nt - 1]
        cuda.syncthreads()


@cuda.jit(device=True)
def block_k(b, n_blocks, k_full, k_tail):
    return k_tail if b == n_blocks - 1 else k_full


@cuda.jit
def topk_blocks_kernel(
    x, x_bits, abs_mask, key_bits, block_size, k_full, k_tail, values, values_kind, indices
):
    hist = cuda.shared.array(RADIX_BINS, int32)
    state = cuda.shared.array(2, int64)
    scan_gt = cuda.shared.array(THREADS, int32)
    scan_eq = cuda.shared.array(THREADS, int32)
    n_blocks = (x.size + block_size - 1) // block_size
    for b in range(cuda.blockIdx.x, n_blocks, cuda.gridDim.x):
        start = b * block_size
        n = min(block_size, x.size - start)
        k = block_k(b, n_blocks, k_full, k_tail)
        threshold, take_equal = block_threshold(
            x_bits, start, n, abs_mask, key_bits, k, hist, state
        )
        first = b * k_full
        block_ordered_indices(
            x_bits,
            start,
            n,
            abs_mask,
            np.uint64(threshold),
            take_equal,
            indices,
            first,
            scan_gt,
            scan_eq,
        )
        cuda.syncthreads()
        for p in range(cuda.threadIdx.x, k, cuda.blockDim.x):
            store_value(values, first + p, x[start + indices[first + p]], values_kind)
        cuda.syncthreads()


@cuda.jit
def scatter_add_kernel(values, values_kind, indices, block_size, k_full, k_tail, scale, out):
    """One thread per entry (indices are unique within a block: no write conflicts)."""
    p = cuda.grid(1)
    if p < values.size:
        out[(p // k_full) * block_size + indices[p]] += scale * load_value(values, p, values_kind)


@cuda.jit
def gather_kernel(x, indices, block_size, k_full, k_tail, values, values_kind):
    p = cuda.grid(1)
    if p < values.size:
        store_value(values, p, x[(p // k_full) * block_size + indices[p]], values_kind)


@cuda.jit
def zero_selected_kernel(x, indices, block_size, k_full, k_tail):
    p = cuda.grid(1)
    if p < indices.size:
        x[(p // k_full) * block_size + indices[p]] = 0


@cuda.jit(device=True)
def block_moments(values, values_kind, indices, weights, first, k, m_row, s_row, flags):
    """Zero the scratch at the block's entries, then accumulate β^age-weighted sums (atomics).
    weights (3, valid rows) in the statistics' float type: the rows by age (newest first),
    β1^age and β2^age."""
    tid = cuda.threadIdx.x
    count = weights.shape[1] * k
    for e in range(tid, count, cuda.blockDim.x):
        j = indices[int64(weights[0, e // k]), first + e % k]
        m_row[j] = 0.0
        s_row[j] = 0.0
        flags[j] = 0
    cuda.syncthreads()
    for e in range(tid, count, cuda.blockDim.x):
        a = e // k
        r = int64(weights[0, a])
        j = indices[r, first + e % k]
        v = m_row.dtype.type(load_value(values[r], first + e % k, values_kind))
        cuda.atomic.add(m_row, j, weights[1, a] * v)
        cuda.atomic.add(s_row, j, weights[2, a] * v * v)
    cuda.syncthreads()


@cuda.jit(device=True)
def adam_direction(m_row, s_row, j, c1, c2, eps):
    root = m_row.dtype.type(math.sqrt(c2 * s_row[j]))
    return c1 * m_row[j] / (root + eps)


@cuda.jit(device=True)
def narrow_direction(m_row, s_row, j, c1, c2, eps):
    """As the CPU kernel's `narrow_direction`: float32 square root and division in range."""
    second = c2 * s_row[j]
    first = c1 * m_row[j]
    if second < NARROW_LIMIT and abs(first) < NARROW_LIMIT:
        return np.float32(first) / (math.sqrt(np.float32(second)) + np.float32(eps))
    return np.float32(first / (math.sqrt(second) + eps))


@cuda.jit
def window_adam_kernel(
    values,
    values_kind,
    indices,
    weights,
    block_size,
    k_full,
    k_tail,
    c1,
    c2,
    eps,
    out,
    moments,
    flags,
):
    """weights as in `block_moments`; moments (2, workers, block_size): each thread block's M
    and S rows; flags (workers, block_size)."""
    n_blocks = (out.size + block_size - 1) // block_size
    w = cuda.blockIdx.x
    m_row = moments[0, w]
    s_row = moments[1, w]
    for b in range(w, n_blocks, cuda.gridDim.x):
        first = b * k_full
        k = block_k(b, n_blocks, k_full, k_tail)
        block_moments(values, values_kind, indices, weights, first, k, m_row, s_row, flags[w])
        for e in range(cuda.threadIdx.x, weights.shape[1] * k, cuda.blockDim.x):
            j = indices[int64(weights[0, e // k]), first + e % k]
            out[b * block_size + j] = adam_direction(m_row, s_row, j, c1, c2, eps)
        cuda.syncthreads()


@cuda.jit
def window_adam_apply_kernel(
    values,
    values_kind,
    indices,
    weights,
    block_size,
    k_full,
    k_tail,
    c1,
    c2,
    eps,
    lr,
    param,
    param_kind,
    decay,
    moments,
    flags,
):
    """param *= decay over the block, then param -= lr·u once per support coordinate: the first
    thread to flip its flag applies. weights, moments and flags as in `window_adam_kernel`."""
    n_blocks = (param.size + block_size - 1) // block_size
    w = cuda.blockIdx.x
    m_row = moments[0, w]
    s_row = moments[1, w]
    for b in range(w, n_blocks, cuda.gridDim.x):
        first = b * k_full
        k = block_k(b, n_blocks, k_full, k_tail)
        if decay != 1:
            end = min(param.size, (b + 1) * block_size)
            for i in range(b * block_size + cuda.threadIdx.x, end, cuda.blockDim.x):
                if param_kind == 0:
                    param[i] = param[i] * param.dtype.type(decay)
                else:
                    x = np.float32(load_value(param, i, param_kind)) * np.float32(decay)
                    store_value(param, i, x, param_kind)
            cuda.syncthreads()
        block_moments(values, values_kind, indices, weights, first, k, m_row, s_row, flags[w])
        for e in range(cuda.threadIdx.x, weights.shape[1] * k, cuda.blockDim.x):
            j = indices[int64(weights[0, e // k]), first + e % k]
            if cuda.atomic.cas(flags[w], j, 0, 1) == 0:
                if (param_kind == 0 and param.itemsize == 8) or eps < NARROW_MIN_EPS:
                    u = adam_direction(m_row, s_row, j, c1, c2, eps)
                else:
                    u = narrow_direction(m_row, s_row, j, c1, c2, eps)
                i = b * block_size + j
                if param_kind == 0:
                    param[i] = param[i] - lr * param.dtype.type(u)
                else:
                    p = np.float32(load_value(param, i, param_kind))
                    store_value(param, i, p - lr * np.float32(u), param_kind)
        cuda.syncthreads()


@cuda.jit
def ef_topk_requantize_kernel(
    grad,
    grad_kind,
    scale,
    abs_mask,
    key_bits,
    codes,
    lo,
    hi,
    bits,
    bucket,
    bounds_bf16,
    block_size,
    k_full,
    k_tail,
    row_values,
    values_kind,
    row_indices,
    feedback,
    work,
    work_bits,
):
    """Per data block: a = scale·grad + decode(error) in the block's scratch row `work` (scale's
    float type; `work_bits` is the same memory as unsigned keys, read by the radix select),
    ordered gather into the window row, zero the selection, requantize (a thread per bucket).
    feedback=False: a = scale·grad, the error is neither read nor written."""
    hist = cuda.shared.array(RADIX_BINS, int32)
    state = cuda.shared.array(2, int64)
    scan_gt = cuda.shared.array(THREADS, int32)
    scan_eq = cuda.shared.array(THREADS, int32)
    n = grad.size
    n_blocks = (n + block_size - 1) // block_size
    w = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    base = w * block_size
    for b in range(w, n_blocks, cuda.gridDim.x):
        start = b * block_size
        length = min(block_size, n - start)
        for j in range(tid, length, nt):
            e = start + j
            a = scale * work.dtype.type(load_value(grad, e, grad_kind))
            if feedback:
                a += decode(codes, e, lo, hi, e // bucket, bits, bounds_bf16)
            work[base + j] = a
        cuda.syncthreads()
        k = block_k(b, n_blocks, k_full, k_tail)
        threshold, take_equal = block_threshold(
            work_bits, base, length, abs_mask, key_bits, k, hist, state
        )
        first = b * k_full
        block_ordered_indices(
            work_bits,
            base,
            length,
            abs_mask,
            np.uint64(threshold),
            take_equal,
            row_indices,
            first,
            scan_gt,
            scan_eq,
        )
        cuda.syncthreads()
        for p in range(tid, k, nt):
            j = row_indices[first + p]
            store_value(row_values, first + p, work[base + j], values_kind)
            work[base + j] = 0
        cuda.syncthreads()
        for q in range(tid * bucket, length if feedback else 0, nt * bucket):
            quantize_bucket(
                work,
                base + q,
                start + q,
                min(bucket, length - q),
                codes,
                lo,
                hi,
                (start + q) // bucket,
                bits,
                bounds_bf16,
                False,
                0,
            )
        cuda.syncthreads()


@cuda.jit
def add_bf16_kernel(bits, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] += bf16_bits_to_f32(bits[i])


@cuda.jit
def round_to_bf16_kernel(src, bits):
    i = cuda.grid(1)
    if i < src.size:
        bits[i] = f32_to_bf16_bits(src[i])


@cuda.jit
def densify_from_error_kernel(codes, lo, hi, bits, bucket, bounds_bf16, step, keep, param, kind):
    """One thread per bucket (whole bytes: 4-bit buckets are even): param[e] -= step·q[e] for the
    decoded error q, then the bucket is requantized from keep·q (a second decode from the old
    bounds, kept in registers; each 4-bit byte is read before it is rewritten)."""
    b = cuda.grid(1)
    if b >= lo.size:
        return
    start = b * bucket
    n = min(bucket, param.size - start)
    max_code = (1 << bits) - 1
    _, unscale, base, q_step, _ = bucket_steps(
        load_bound(lo, b, bounds_bf16), load_bound(hi, b, bounds_bf16), max_code
    )
    new_lo = np.float32(np.inf)
    new_hi = np.float32(-np.inf)
    for j in range(n):
        e = start + j
        q = dequant_value(read_code(codes, e, bits), q_step, base, unscale)
        if kind == 0:
            param[e] = param[e] - step * param.dtype.type(q)
        else:
            x = np.float32(load_value(param, e, kind))
            store_value(param, e, x - step * q, kind)
        r = keep * q
        new_lo = min(new_lo, r)
        new_hi = max(new_hi, r)
    new_lo, new_hi = store_bounds(lo, hi, b, new_lo, new_hi, bounds_bf16)
    scale, _, new_base, _, inv_step = bucket_steps(new_lo, new_hi, max_code)
    half = np.float32(0.5)
    per_byte = 1 if bits == 8 else 2
    for j in range(0, n, per_byte):
        e = start + j
        q = dequant_value(read_code(codes, e, bits), q_step, base, unscale)
        c = quant_code(keep * q, scale, new_base, inv_step, half, max_code)
        if bits == 8:
            codes[e] = c
        else:
            pair = 0
            if j + 1 < n:
                q = dequant_value(read_code(codes, e + 1, bits), q_step, base, unscale)
                pair = quant_code(keep * q, scale, new_base, inv_step, half, max_code)
            codes[e >> 1] = (c << 4) | pair
