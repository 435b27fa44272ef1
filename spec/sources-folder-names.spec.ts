/**
 * Image folders take names as the file system holds them (newlines, hidden folders and files,
 * as torchvision's ImageFolder does), and every entry they do not take is counted in the skip
 * log with its reason: nothing vanishes silently.
 */
import * as fs from 'fs';
import * as path from 'path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SkipLog } from '../datapath/batches';
import { imageFolder } from '../sources/image-folder';
import { openSource } from '../sources/open';
import { collect, jpeg, keys, tmpDir } from './sources-fixtures';

let root = '';
const NEWLINE_CLASS = 'sea\nlion';

test.before(async () => {
  root = tmpDir();
  const images = ['cat/1.jpg', `${NEWLINE_CLASS}/2.jpg`, '.hidden-class/3.png', 'dog/.4.jpg', 'dog/5.JPEG', 'dog/sub dir/6.webp', 'top.jpg'];
  for (const [i, name] of images.entries()) {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    fs.writeFileSync(path.join(root, name), await jpeg(i, name.endsWith('.png') ? 'png' : 'jpeg'));
  }
  fs.writeFileSync(path.join(root, 'dog', '.DS_Store'), 'finder');
  fs.writeFileSync(path.join(root, 'cat', 'notes.txt'), 'text');
  fs.mkdirSync(path.join(root, 'empty-class'));
  fs.symlinkSync('missing.jpg', path.join(root, 'cat', 'broken.jpg'));
  fs.symlinkSync(path.join(root, 'cat'), path.join(root, 'dog', 'cat-again'));
});
test.after(() => fs.rmSync(root, { recursive: true, force: true }));

test('class names as the file system holds them: a newline, a hidden folder; hidden image files are images', async () => {
  const source = imageFolder({ root, onSkip: () => {} });
  assert.equal(source.classes, ['.hidden-class', 'cat', 'dog', NEWLINE_CLASS]);
  const got = await collect(source);
  assert.equal(keys(got), ['.hidden-class/3', 'cat/1', 'dog/.4', 'dog/5', 'dog/sub dir/6', `${NEWLINE_CLASS}/2`, 'top']);
  assert.equal(got.map((s) => s.label), [0, 1, 2, 2, 2, 3, -1]);
  for (const s of got) assert.ok(s.bytes.equals(fs.readFileSync(s.origin)), s.origin);
});

test('every entry not taken is counted with its reason in the skip log', () => {
  const skips = new SkipLog();
  const warn = console.warn;
  console.warn = () => {};
  try {
    openSource(root, { onSkip: (o, r) => skips.record(o, r) });
  } finally {
    console.warn = warn;
  }
  assert.equal(Object.fromEntries(skips.counts), {
    'not an image file': 2,
    'symbolic link to nothing': 1,
    'the same file as another path (a symbolic or hard link)': 3,
    'class folder without images': 1,
  });
  assert.is(skips.summary(), '1 x symbolic link to nothing; 2 x not an image file; 3 x the same file as another path (a symbolic or hard link); 1 x class folder without images');
  const reasons: string[] = [];
  imageFolder({ root, onSkip: (o, r) => reasons.push(`${path.relative(root, o)} | ${r}`) });
  assert.equal(reasons.sort(), [
    'cat/broken.jpg | symbolic link to nothing: missing.jpg',
    'cat/notes.txt | not an image file: its extension is not one of jpg, jpeg, png, webp',
    'dog/.DS_Store | not an image file: its extension is not one of jpg, jpeg, png, webp',
    'dog/cat-again/1.jpg | the same file as another path (a symbolic or hard link): cat/1.jpg',
    'dog/cat-again/broken.jpg | the same file as another path (a symbolic or hard link): cat/broken.jpg',
    'dog/cat-again/notes.txt | the same file as another path (a symbolic or hard link): cat/notes.txt',
    'empty-class | class folder without images: not a class',
  ]);
});

test("labels: 'ignored' gives -1 to every image of a folder", async () => {
  const got = await collect(imageFolder({ root, labels: 'ignored', onSkip: () => {} }));
  assert.is(got.length, 7);
  assert.ok(got.every((s) => s.label === -1));
});

test.run();
