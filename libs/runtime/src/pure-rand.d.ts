/**
 * pure-rand 8 publishes its modules only through package.json "exports", which the repository's
 * `moduleResolution: node` does not read; Node's require() and Vite do. These ambient modules
 * point the type checker at the same files by path.
 */
declare module 'pure-rand/generator/xoroshiro128plus' {
  export * from 'pure-rand/lib/generator/xoroshiro128plus';
}
declare module 'pure-rand/distribution/uniformFloat64' {
  export * from 'pure-rand/lib/distribution/uniformFloat64';
}
declare module 'pure-rand/distribution/uniformInt' {
  export * from 'pure-rand/lib/distribution/uniformInt';
}
