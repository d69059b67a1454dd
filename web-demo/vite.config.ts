import { defineConfig } from 'vite'

// The built bundle in dist/ is committed and embedded into the plait binary,
// which serves it at `/` (index.html), `/tiptap.html` and `/assets/...`. Two pages,
// one build: the plain-text editor on y-websocket (index.html, src/main.ts) and the
// rich-text editor on the Hocuspocus provider (tiptap.html, src/tiptap.ts); code both
// use (yjs, the presence list, the styles) goes into shared chunks. Relative asset URLs keep
// the bundle working wherever it is mounted. Output is content-hashed and
// deterministic so that scripts/check-dist.sh can compare a rebuild byte for byte.
export default defineConfig({
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    target: 'es2020',
    reportCompressedSize: false,
    chunkSizeWarningLimit: 1024,
    rollupOptions: {
      // Relative to the project root (this directory).
      input: { index: 'index.html', tiptap: 'tiptap.html' },
    },
  },
  server: {
    port: 5173,
  },
})
