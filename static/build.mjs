// Builds the browser pages into dist/ with esbuild: the share page (/s/) and the admin
// console (/), their scripts (ES modules, code-split so a VNC visitor never downloads
// the SPICE client and vice versa) and styles. No inline script or style anywhere:
// the gateway's CSP forbids them.
//
//   node build.mjs            one build
//   node build.mjs --watch    rebuild on change

import * as esbuild from 'esbuild';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const src = join(root, 'src');
const dist = join(root, 'dist');
const watch = process.argv.includes('--watch');

// spice-html5 sets one inline style with setAttribute('style', ...) (on the <video>
// of VP8 streams), which a CSP without 'unsafe-inline' blocks. Rewrite that call to
// CSSOM properties, which CSP allows. Fails the build if the library changed shape.
const spiceCspPatch = {
  name: 'spice-csp-patch',
  setup(build) {
    build.onLoad({ filter: /spice-html5[\\/]src[\\/]display\.js$/ }, async (args) => {
      const code = await readFile(args.path, 'utf8');
      const from = `v.setAttribute('style', "position: absolute; top:" + top + "px; left:" + left + "px;");`;
      if (!code.includes(from)) throw new Error('spice-html5 display.js changed: review the CSP patch in build.mjs');
      const to = `v.style.position = "absolute"; v.style.top = top + "px"; v.style.left = left + "px";`;
      return { contents: code.replace(from, to), loader: 'js' };
    });
  },
};

// xterm.js puts its run-time rules (cell sizes, theme colours) into <style> elements and
// sets the colours of true-colour text with setAttribute('style', ...): a CSP without
// 'unsafe-inline' blocks both. Its <style> elements become inert <vmgw-style> elements
// whose text goes into a constructed style sheet (adoptedStyleSheets, which CSP allows),
// and the style attribute is set through CSSOM. Fails the build if the library changed
// shape.
const xtermCspPatch = {
  name: 'xterm-csp-patch',
  setup(build) {
    build.onLoad({ filter: /@xterm[\\/]xterm[\\/]lib[\\/]xterm\.mjs$/ }, async (args) => {
      let code = await readFile(args.path, 'utf8');
      const styleRe = /([A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*)\.createElement\("style"\)/g;
      const found = code.match(styleRe) ?? [];
      if (found.length !== 3) throw new Error(`xterm.mjs changed: ${found.length} <style> creations (expected 3); review the CSP patch in build.mjs`);
      code = code.replace(styleRe, '__vmgwCspStyle($1)');
      const attrFrom = '_addStyle(t,e){t.setAttribute("style",`${t.getAttribute("style")||""}${e};`)}';
      if (!code.includes(attrFrom)) throw new Error('xterm.mjs changed: _addStyle; review the CSP patch in build.mjs');
      code = code.replace(attrFrom, '_addStyle(t,e){t.style.cssText+=`${e};`}');
      const shim = `function __vmgwCspStyle(doc) {
  const el = doc.createElement('vmgw-style');
  const sheet = new doc.defaultView.CSSStyleSheet();
  doc.adoptedStyleSheets = [...doc.adoptedStyleSheets, sheet];
  let text = '';
  Object.defineProperty(el, 'textContent', { get: () => text, set: (v) => { text = String(v ?? ''); sheet.replaceSync(text); } });
  const remove = el.remove.bind(el);
  el.remove = () => { doc.adoptedStyleSheets = doc.adoptedStyleSheets.filter((s) => s !== sheet); remove(); };
  return el;
}
`;
      return { contents: shim + code, loader: 'js' };
    });
  },
};

const options = {
  entryPoints: {
    share: join(src, 'share.js'),
    admin: join(src, 'admin.js'),
    'share-style': join(src, 'share.css'),
    'admin-style': join(src, 'admin.css'),
  },
  outdir: dist,
  bundle: true,
  format: 'esm',
  splitting: true,
  // noVNC uses top-level await (H.264 support check): ES2022 modules.
  target: ['es2022', 'chrome100', 'firefox100', 'safari16'],
  minify: true,
  sourcemap: 'linked',
  legalComments: 'linked',
  chunkNames: 'chunks/[name]-[hash]',
  assetNames: 'assets/[name]-[hash]',
  entryNames: '[name]',
  logLevel: 'warning',
  metafile: true,
  plugins: [spiceCspPatch, xtermCspPatch],
  // @novnc/novnc exports only core/rfb.js; its keysym tables live beside it. The alias
  // reaches them by file path (same files, so nothing is bundled twice).
  alias: { 'novnc-core': join(root, 'node_modules/@novnc/novnc/core') },
};

async function copyPages() {
  await mkdir(dist, { recursive: true });
  for (const f of ['share.html', 'admin.html', 'favicon.svg']) {
    await copyFile(join(src, f), join(dist, f));
  }
}

// CSS entry points come out as <name>.css; give them the names the pages use.
async function renameCss() {
  for (const [from, to] of [['share-style.css', 'share.css'], ['admin-style.css', 'admin.css']]) {
    const css = await readFile(join(dist, from), 'utf8');
    await writeFile(join(dist, to), css.replace(`sourceMappingURL=${from}.map`, `sourceMappingURL=${to}.map`));
    await copyFile(join(dist, `${from}.map`), join(dist, `${to}.map`));
    await rm(join(dist, from));
    await rm(join(dist, `${from}.map`));
  }
}

if (watch) {
  await copyPages();
  const ctx = await esbuild.context({
    ...options,
    plugins: [...options.plugins, { name: 'after', setup: (b) => b.onEnd(async (r) => { if (!r.errors.length) { await copyPages(); await renameCss(); console.log('built', new Date().toLocaleTimeString()); } }) }],
  });
  await ctx.watch();
  console.log('watching src/ ...');
} else {
  await rm(dist, { recursive: true, force: true });
  const result = await esbuild.build(options);
  await copyPages();
  await renameCss();
  const out = Object.entries(result.metafile.outputs)
    .filter(([f]) => !f.endsWith('.map'))
    .map(([f, o]) => `${f.replace(/^.*dist\//, 'dist/').replace('-style.css', '.css')}  ${(o.bytes / 1024).toFixed(1)} KiB`);
  console.log(out.join('\n'));
}
