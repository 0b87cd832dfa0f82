"""Numba kernels for products of a large matrix with a block of a few columns, on CPU.

The two products take the large matrix C-ordered (m×n) and the blocks transposed (c×·,
C-ordered), which is what a Fortran-ordered m×c workspace is when viewed transposed, so no copy
is made. Both are blocked the way a BLAS micro-kernel is, so the loops run on arithmetic rather
than on loads: `rows_dot` over four rows of A and four columns of the block (each loaded element
of A serves four columns, each loaded element of the block four rows), `rows_axpy` over eight
rows of A and four columns (each loaded element of A serves four columns, each
read-modify-write of the accumulator carries eight products).

- `rows_dot`: outᵀ[k, i] = Σ_j A[i, j]·X[j, k] (A·X): sixteen dot products at a time, each a
  vectorized reduction (reassociation allowed, as in any blocked BLAS).
- `rows_axpy`: outᵀ[k, j] = Σ_i A[i, j]·Y[i, k] (Aᵀ·Y): per eight rows of A and four columns,
  one pass adding eight scaled rows into each of four rows of a per-thread accumulator (c×n
  each), summed at the end.

Measured against torch.mm (MKL) on the 2-core AMD EPYC development machine, float32, best of
15, both on two threads: A·X on 4096×1024 with 21 columns 0.51 ms against 1.80 ms, with 74
columns 1.59 against 3.51 ms; Aᵀ·Y on 768×3072 with 21 columns 0.42 against 1.42 ms, on
4096×1024 with 74 columns 2.02 against 4.39 ms (1.5x faster than with eight rows by one column,
the blocking before), with 261 columns 6.5 against 11.6 ms. Both still won at 384 columns; hence
the column limits of `_backend.matmul` (288). On an Intel CPU MKL may do better; the limits are
this machine's.

On targets with FMA the register tile of `_tiles` takes over (see `_backend._thin_matmul`):
every Aᵀ·Y, A·X with a column count that is a multiple of the vector length, and all rank-K
updates; these loops remain for the other A·X products and for targets without FMA.
"""

import numpy as np
from numba import njit, prange


@njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def rows_dot(a, x_t, out_t):
    """out_t (c×m) = (A X)ᵀ for a (m×n), x_t = Xᵀ (c×n); all C-ordered."""
    m, n = a.shape
    c = x_t.shape[0]
    zero = a.dtype.type(0.0)
    for block in prange((m + 3) // 4):
        i = 4 * block
        if i + 4 > m:  # the last rows, one at a time
            for row in range(i, m):
                _dot_one_row(a[row], x_t, out_t, row)
            continue
        r0, r1, r2, r3 = a[i], a[i + 1], a[i + 2], a[i + 3]
        k = 0
        while k + 4 <= c:
            x0, x1, x2, x3 = x_t[k], x_t[k + 1], x_t[k + 2], x_t[k + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for j in range(n):
                v0, v1, v2, v3 = x0[j], x1[j], x2[j], x3[j]
                u = r0[j]
                s00 += u * v0
                s01 += u * v1
                s02 += u * v2
                s03 += u * v3
                u = r1[j]
                s10 += u * v0
                s11 += u * v1
                s12 += u * v2
                s13 += u * v3
                u = r2[j]
                s20 += u * v0
                s21 += u * v1
                s22 += u * v2
                s23 += u * v3
                u = r3[j]
                s30 += u * v0
                s31 += u * v1
                s32 += u * v2
                s33 += u * v3
            out_t[k, i], out_t[k, i + 1], out_t[k, i + 2], out_t[k, i + 3] = s00, s10, s20, s30
            out_t[k + 1, i], out_t[k + 1, i + 1] = s01, s11
            out_t[k + 1, i + 2], out_t[k + 1, i + 3] = s21, s31
            out_t[k + 2, i], out_t[k + 2, i + 1] = s02, s12
            out_t[k + 2, i + 2], out_t[k + 2, i + 3] = s22, s32
            out_t[k + 3, i], out_t[k + 3, i + 1] = s03, s13
            out_t[k + 3, i + 2], out_t[k + 3, i + 3] = s23, s33
            k += 4
        for column in range(k, c):  # the last columns: four rows against one column
            x = x_t[column]
            t0 = t1 = t2 = t3 = zero
            for j in range(n):
                v = x[j]
                t0 += r0[j] * v
                t1 += r1[j] * v
                t2 += r2[j] * v
                t3 += r3[j] * v
            out_t[column, i], out_t[column, i + 1] = t0, t1
            out_t[column, i + 2], out_t[column, i + 3] = t2, t3


@njit(fastmath={"reassoc", "contract"}, cache=True)
def _dot_one_row(row, x_t, out_t, i):
    for k in range(x_t.shape[0]):
        column = x_t[k]
        total = row.dtype.type(0.0)
        for j in range(row.size):
            total += row[j] * column[j]
        out_t[k, i] = total


@njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def rows_axpy(a, y_t, out_t, workers):
    """out_t (c×n) = (Aᵀ Y)ᵀ for a (m×n), y_t = Yᵀ (c×m); all C-ordered. `workers` row ranges
    (multiples of eight rows) accumulate into their own c×n partial sums."""
    m, n = a.shape
    c = y_t.shape[0]
    partial = np.zeros((workers, c, n), a.dtype)
    chunk = (m + workers - 1) // workers
    chunk += -chunk % 8
    for w in prange(workers):
        acc = partial[w]
        stop = min(m, (w + 1) * chunk)
        i = w * chunk
        while i + 8 <= stop:
            r0, r1, r2, r3 = a[i], a[i + 1], a[i + 2], a[i + 3]
            r4, r5, r6, r7 = a[i + 4], a[i + 5], a[i + 6], a[i + 7]
            k = 0
            while k + 4 <= c:
                # the 32 weights as named scalars: read through the rows inside the j loop,
                # they would be reloaded at every j (the accumulator stores may alias them)
                y = y_t[k]
                a0, a1, a2, a3 = y[i], y[i + 1], y[i + 2], y[i + 3]
                a4, a5, a6, a7 = y[i + 4], y[i + 5], y[i + 6], y[i + 7]
                y = y_t[k + 1]
                b0, b1, b2, b3 = y[i], y[i + 1], y[i + 2], y[i + 3]
                b4, b5, b6, b7 = y[i + 4], y[i + 5], y[i + 6], y[i + 7]
                y = y_t[k + 2]
                c0, c1, c2, c3 = y[i], y[i + 1], y[i + 2], y[i + 3]
                c4, c5, c6, c7 = y[i + 4], y[i + 5], y[i + 6], y[i + 7]
                y = y_t[k + 3]
                d0, d1, d2, d3 = y[i], y[i + 1], y[i + 2], y[i + 3]
                d4, d5, d6, d7 = y[i + 4], y[i + 5], y[i + 6], y[i + 7]
                ta, tb, tc, td = acc[k], acc[k + 1], acc[k + 2], acc[k + 3]
                for j in range(n):
                    u0, u1, u2, u3 = r0[j], r1[j], r2[j], r3[j]
                    u4, u5, u6, u7 = r4[j], r5[j], r6[j], r7[j]
                    ta[j] += ((u0 * a0 + u1 * a1) + (u2 * a2 + u3 * a3)) + (
                        (u4 * a4 + u5 * a5) + (u6 * a6 + u7 * a7)
                    )
                    tb[j] += ((u0 * b0 + u1 * b1) + (u2 * b2 + u3 * b3)) + (
                        (u4 * b4 + u5 * b5) + (u6 * b6 + u7 * b7)
                    )
                    tc[j] += ((u0 * c0 + u1 * c1) + (u2 * c2 + u3 * c3)) + (
                        (u4 * c4 + u5 * c5) + (u6 * c6 + u7 * c7)
                    )
                    td[j] += ((u0 * d0 + u1 * d1) + (u2 * d2 + u3 * d3)) + (
                        (u4 * d4 + u5 * d5) + (u6 * d6 + u7 * d7)
                    )
                k += 4
            for column in range(k, c):  # the last columns: eight rows into one column
                y = y_t[column]
                y0, y1, y2, y3 = y[i], y[i + 1], y[i + 2], y[i + 3]
                y4, y5, y6, y7 = y[i + 4], y[i + 5], y[i + 6], y[i + 7]
                target = acc[column]
                for j in range(n):
                    target[j] += (r0[j] * y0 + r1[j] * y1 + r2[j] * y2 + r3[j] * y3) + (
                        r4[j] * y4 + r5[j] * y5 + r6[j] * y6 + r7[j] * y7
                    )
            i += 8
        for row in range(i, stop):  # the range's last rows, one at a time
            for k in range(c):
                weight = y_t[k, row]
                target = acc[k]
                for j in range(n):
                    target[j] += a[row, j] * weight
    for k in prange(c):
        for j in range(n):
            total = partial[0, k, j]
            for w in range(1, workers):
                total += partial[w, k, j]
            out_t[k, j] = total
