// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title ExactRules — one coordinate of docs/aggregation.md's integer rules
/// @notice The rounding `R(a / b)` (half to even, section 2), clipping by a committed
/// multiplier (section 4), and the order rules median (section 6) and trimmed mean (section 7)
/// over one coordinate's values; fedavg (section 5) is `roundDiv(sum w*c, sum w)`. The reference
/// is `fedledger.protocol.exact_rules`; every result fits int32.
library ExactRules {
    /// @notice 2**32: the clip multiplier of an update left unclipped (`trunc(q * 2**32 / 2**32) = q`).
    uint64 internal constant UNCLIPPED = 1 << 32;

    /// @notice `R(a / b)` for `b > 0`: the nearest integer, ties to the even one.
    function roundDiv(int256 a, uint256 b) internal pure returns (int256 q) {
        // forge-lint: disable-next-line(unsafe-typecast)
        int256 d = int256(b); // b < 2**255: a sum of capped uint64 weights, or a count
        q = a / d;
        int256 r = a % d;
        if (r < 0) {
            q -= 1;
            r += d;
        }
        if (2 * r + (q & 1) > d) q += 1;
    }

    /// @notice `trunc(q * clip / 2**32)`, toward zero (section 4); `clip = 2**32` leaves `q`.
    function clipped(int32 q, uint64 clip) internal pure returns (int256) {
        return (int256(q) * int256(uint256(clip))) / int256(uint256(UNCLIPPED));
    }

    /// @notice Median of `v` (sorted in place): the middle value, or `R` of the two middle ones' mean.
    function median(int256[] memory v) internal pure returns (int256) {
        uint256 n = v.length;
        if (n == 0) return 0;
        sort(v);
        if (n % 2 == 1) return v[n / 2];
        return roundDiv(v[n / 2 - 1] + v[n / 2], 2);
    }

    /// @notice Trimmed mean of `v` (sorted in place): `k = floor(betaNum * n / betaDen)` values
    /// dropped at each end, `R` of the mean of the rest.
    function trimmedMean(int256[] memory v, uint256 betaNum, uint256 betaDen) internal pure returns (int256) {
        uint256 n = v.length;
        if (n == 0) return 0;
        sort(v);
        // slither-disable-next-line divide-before-multiply -- k = floor(beta * n) is the rule (docs/aggregation.md section 7)
        uint256 k = (betaNum * n) / betaDen;
        int256 sum;
        for (uint256 i = k; i < n - k; ++i) {
            sum += v[i];
        }
        // slither-disable-next-line divide-before-multiply -- n - 2k values are left after trimming k at each end
        return roundDiv(sum, n - 2 * k);
    }

    /// @notice Sort `v` ascending in place (heapsort: no recursion, O(n log n) in the worst case).
    function sort(int256[] memory v) internal pure {
        uint256 n = v.length;
        if (n < 2) return;
        for (uint256 i = n / 2; i > 0; --i) {
            _siftDown(v, i - 1, n);
        }
        for (uint256 end = n - 1; end > 0; --end) {
            (v[0], v[end]) = (v[end], v[0]);
            _siftDown(v, 0, end);
        }
    }

    /// @dev Restore the max-heap below `root` within `v[0:size]`.
    function _siftDown(int256[] memory v, uint256 root, uint256 size) private pure {
        int256 x = v[root];
        while (true) {
            uint256 child = 2 * root + 1;
            if (child >= size) break;
            if (child + 1 < size && v[child + 1] > v[child]) ++child;
            if (v[child] <= x) break;
            v[root] = v[child];
            root = child;
        }
        v[root] = x;
    }
}
