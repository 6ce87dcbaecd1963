# syntax=docker/dockerfile:1
# One image for the whole lab: build once, choose the service by command
# (dist/apps/<mm|cpu|hca|kvm|observer|lab>/src/main.js).

FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    MMLAB_HTTP_PORT=9464
WORKDIR /app
COPY --from=build --chown=node:node /src/package.json /src/nest-cli.json ./
COPY --from=build --chown=node:node /src/node_modules ./node_modules
COPY --from=build --chown=node:node /src/dist ./dist
COPY --from=build --chown=node:node /src/examples ./examples
USER node
# Every service answers /health (Terminus: NATS and Redis) on its HTTP port; the observer on
# MMLAB_OBSERVER_PORT, the others on MMLAB_HTTP_PORT.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=12 \
  CMD ["node", "-e", "const p=process.env.MMLAB_HEALTH_PORT||process.env.MMLAB_HTTP_PORT;fetch('http://127.0.0.1:'+p+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "--enable-source-maps"]
CMD ["dist/apps/mm/src/main.js"]
