import { defineConfig } from "vite";

// Served by the gateway at /console/ (console_dir = console/dist).
export default defineConfig({
  base: "/console/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 2048,
  },
  resolve: {
    // The Bandwidth SDK uses Node's `events`: the npm polyfill stands in.
    alias: { events: "events/" },
  },
  define: { global: "globalThis" },
});
