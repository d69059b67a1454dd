import { defineConfig } from 'vite'

// The built bundle in dist/ is committed and embedded into the plait binary,
// which serves it at `/` (index.html) and `/assets/...`. Relative asset URLs keep
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
  },
  server: {
    port: 5173,
  },
})
