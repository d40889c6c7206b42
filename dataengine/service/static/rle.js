// COCO run-length encoding of binary masks, as pycocotools does it.
// A mask here is a Uint8Array of height * width in row-major order (index y * width + x), 1 = inside.
// COCO runs go down the columns (column-major): counts alternate 0-runs and 1-runs, starting with zeros.
// The compressed string stores each count (from the third on, as the difference to the count two before)
// in 5-bit groups with a continuation bit, each group + 48 as an ASCII character (pycocotools rleToString).

/** Return the run lengths of a row-major mask, in COCO's column-major order. */
export function maskToCounts(mask, height, width) {
  const counts = [];
  let current = 0, run = 0;
  for (let x = 0; x < width; x++) {
    for (let index = x; index < height * width; index += width) {
      const value = mask[index] ? 1 : 0;
      if (value !== current) { counts.push(run); run = 0; current = value; }
      run++;
    }
  }
  counts.push(run);
  return counts;
}

/** Return the compressed COCO string of run lengths (pycocotools' rleToString). */
export function countsToString(counts) {
  let out = "";
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i];
    if (i > 2) x -= counts[i - 2];
    for (let more = true; more;) {
      let c = x & 0x1f;
      x >>= 5;                                  // arithmetic shift: negative differences stay negative
      more = (c & 0x10) ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      out += String.fromCharCode(c + 48);
    }
  }
  return out;
}

/** Return the run lengths of a compressed COCO string (pycocotools' rleFrString); throws on a bad string. */
export function stringToCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      if (p >= text.length) throw new Error("RLE string ends in the middle of a count");
      const c = text.charCodeAt(p) - 48;
      if (c < 0 || c > 63) throw new Error(`character ${JSON.stringify(text[p])} is not an RLE digit`);
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
      if (k > 6) throw new Error("RLE count too large");
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

/** Return the COCO RLE {size: [h, w], counts: string} of a row-major mask. */
export function encode(mask, height, width) {
  return { size: [height, width], counts: countsToString(maskToCounts(mask, height, width)) };
}

/** Return the row-major Uint8Array mask of a COCO RLE (string or list counts). */
export function decode(rle) {
  const [height, width] = rle.size;
  const counts = typeof rle.counts === "string" ? stringToCounts(rle.counts) : rle.counts;
  const mask = new Uint8Array(height * width);
  let position = 0;
  for (let i = 0; i < counts.length; i++) {
    const end = position + counts[i];
    if (i % 2 === 1) {
      for (let p = position; p < end; p++) {
        const x = (p / height) | 0, y = p - x * height;
        mask[y * width + x] = 1;
      }
    }
    position = end;
  }
  if (position !== height * width) throw new Error(`RLE covers ${position} pixels, the mask has ${height * width}`);
  return mask;
}

/** Return the number of pixels set in a mask. */
export function area(mask) {
  let n = 0;
  for (let i = 0; i < mask.length; i++) n += mask[i];
  return n;
}
