// Builds the web UI into one folder the chinwag binary embeds (see ../build.rs):
//   index.html, the page (names its assets; served at / with no-cache)
//   app-HASH.js, app-HASH.css, icon-HASH.svg (content-hashed: served immutable)
// and a gzip copy (`.gz`) of each, compressed once here so the server never compresses.
//
//   node build.mjs OUT_DIR
import * as esbuild from 'esbuild';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync, constants } from 'node:zlib';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(process.argv[2] ?? path.join(here, 'dist'));

const result = await esbuild.build({
  entryPoints: { app: path.join(here, 'src', 'main.ts') },
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  legalComments: 'none',
  write: false,
  outdir: out,
  entryNames: '[name]-[hash]',
  logLevel: 'warning',
});

fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });

function emit(name, bytes) {
  fs.writeFileSync(path.join(out, name), bytes);
  fs.writeFileSync(
    path.join(out, name + '.gz'),
    gzipSync(bytes, { level: constants.Z_BEST_COMPRESSION }),
  );
}

const names = {};
for (const file of result.outputFiles) {
  const name = path.basename(file.path);
  names[path.extname(name).slice(1)] = name;
  emit(name, file.contents);
}

const icon = fs.readFileSync(path.join(here, 'src', 'icon.svg'));
const iconName = `icon-${createHash('sha256').update(icon).digest('hex').slice(0, 10)}.svg`;
emit(iconName, icon);

const html = fs
  .readFileSync(path.join(here, 'index.html'), 'utf8')
  .replaceAll('%APP_JS%', `/assets/${names.js}`)
  .replaceAll('%APP_CSS%', `/assets/${names.css}`)
  .replaceAll('%ICON%', `/assets/${iconName}`);
for (const placeholder of html.matchAll(/%[A-Z_]+%/g)) {
  throw new Error(`index.html: unknown placeholder ${placeholder[0]}`);
}
emit('index.html', Buffer.from(html));
