/** Command lines for the specs: a base argv with some flags replaced (a flag given twice is refused). */

/** `base` without the flags `extra` gives, then `extra`: withFlags(['--lr', '1', '--seed', '3'], ['--lr', '0']) -> ['--seed', '3', '--lr', '0']. */
export function withFlags(base: string[], extra: string[]): string[] {
  const given = new Set(extra.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0]));
  const out: string[] = [];
  for (let i = 0; i < base.length; i++) {
    const name = base[i].split('=')[0];
    const hasValue = !base[i].includes('=') && i + 1 < base.length && !base[i + 1].startsWith('--');
    if (given.has(name)) {
      if (hasValue) i++;
      continue;
    }
    out.push(base[i]);
  }
  return [...out, ...extra];
}
