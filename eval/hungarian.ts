/**
 * Minimum-cost assignment (Kuhn-Munkres / Hungarian method) in the O(n^2 m) form with row and
 * column potentials (Jonker-Volgenant style shortest augmenting paths, as in scipy's
 * linear_sum_assignment). Used for clustering accuracy: matching clusters to classes.
 */

/**
 * cost: rows x cols, row-major. Returns, for each row, the column assigned to it; every column
 * is used at most once, and when rows > cols the rows left without a column get -1.
 * The total cost of the assignment is minimal.
 */
export function linearSumAssignment(cost: ArrayLike<number>, rows: number, cols: number): Int32Array {
  if (cost.length !== rows * cols) throw new Error(`linearSumAssignment: ${cost.length} costs for ${rows}x${cols}`);
  if (rows > cols) {
    // The algorithm needs rows <= cols: solve the transpose and invert the matching.
    const t = new Float64Array(rows * cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = cost[r * cols + c];
    const rowOfCol = linearSumAssignment(t, cols, rows);
    const out = new Int32Array(rows).fill(-1);
    rowOfCol.forEach((r, c) => (out[r] = c));
    return out;
  }
  const n = rows, m = cols;
  // 1-based, index 0 is the virtual start column of each augmenting path.
  const u = new Float64Array(n + 1), v = new Float64Array(m + 1);
  const rowOf = new Int32Array(m + 1); // rowOf[j]: row (1-based) matched to column j, 0 = free
  const way = new Int32Array(m + 1); // previous column on the shortest path
  const minv = new Float64Array(m + 1);
  const used = new Uint8Array(m + 1);
  for (let i = 1; i <= n; i++) {
    // Grow a shortest-path tree from row i (reduced costs stay >= 0) until it hits a free column.
    rowOf[0] = i;
    let j0 = 0;
    minv.fill(Infinity);
    used.fill(0);
    do {
      used[j0] = 1;
      const i0 = rowOf[j0];
      let delta = Infinity, j1 = 0;
      for (let j = 1; j <= m; j++) {
        if (used[j]) continue;
        const cur = cost[(i0 - 1) * m + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) { minv[j] = cur; way[j] = j0; }
        if (minv[j] < delta) { delta = minv[j]; j1 = j; }
      }
      for (let j = 0; j <= m; j++) {
        if (used[j]) { u[rowOf[j]] += delta; v[j] -= delta; } else minv[j] -= delta;
      }
      j0 = j1;
    } while (rowOf[j0] !== 0);
    // Flip the matching along the path back to the start.
    do {
      const j1 = way[j0];
      rowOf[j0] = rowOf[j1];
      j0 = j1;
    } while (j0 !== 0);
  }
  const colOfRow = new Int32Array(n).fill(-1);
  for (let j = 1; j <= m; j++) if (rowOf[j] !== 0) colOfRow[rowOf[j] - 1] = j - 1;
  return colOfRow;
}
