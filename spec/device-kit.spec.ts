/**
 * The device kit's bundle loads (scripts/device/bundle.sh, what build-kit.sh packs): the GPU
 * machine has no node_modules, only the bundle and the packages the kit carries, so a module
 * that resolves a package when it is loaded (as view/server.ts once resolved uplot) breaks the
 * kit's refine there, and nothing else would notice before a device is lent. The bundle is
 * built into a folder outside the repository and its refine started with --help, which loads
 * every module of the pipeline; the kit's own run (`bash .kit/run.sh --smoke`) needs the
 * network to build, so it stays a manual check.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const ROOT = path.resolve(__dirname, '..');

test('the kit bundle: refine loads with only the packages the kit carries', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'device-kit-'));
  try {
    const built = spawnSync('bash', ['scripts/device/bundle.sh', out], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    assert.is(built.status, 0, built.stderr);
    assert.equal(fs.readdirSync(path.join(out, 'node_modules')).sort(), ['@img', 'detect-libc', 'semver', 'sharp']);
    const help = spawnSync(process.execPath, ['refine.js', '--help'], { cwd: out, encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_PATH: '' } });
    assert.is(help.status, 0, `${help.stdout}\n${help.stderr}`);
    assert.match(help.stdout, /MIM-Refiner: refine a MIM-pretrained ViT/);
    assert.match(help.stdout, /--precision V/);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test.run();
