/**
 * Where the lab API listens (`mmlab up`, `mmlab api`, compose's lab-api) when the port is free.
 * A module of its own: the CLI's commands that only talk to the API (`mmlab chaos`, `heal`) or
 * never do (`run`, `fsck`) name the port without loading the API's server (Nest, OpenAPI).
 */
export const LAB_API_PORT = 8081;
