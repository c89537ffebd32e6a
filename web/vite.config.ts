// The dashboard builds into the Python package, which serves it at `/` (not committed).
import { defineConfig } from "vite";

export default defineConfig({
  build: {
    outDir: "../src/energy_tracker/dashboard",
    emptyOutDir: true,
    target: "es2022",
    // No inline script anywhere: the Content-Security-Policy forbids it.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
  },
});
