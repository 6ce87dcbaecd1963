// @ts-check
import eslint from '@eslint/js';
import prettier from 'eslint-config-prettier';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'results/**', 'eslint.config.mjs'] },
  eslint.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  prettier,
  {
    languageOptions: {
      globals: { ...globals.node },
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-extraneous-class': 'off',
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              // a relative path into apps/ (packages that merely have an apps/ folder are fine)
              regex: '^(\\.{1,2}/)+(.*/)?apps/',
              message: 'Apps import libs, never each other.',
            },
          ],
        },
      ],
    },
  },
  {
    // production code never loads the test helpers: they pull in devDependencies (playwright-core)
    // that an install without them (the compose image) does not have
    files: ['apps/**/*.ts', 'libs/!(testing)/**/*.ts'],
    ignores: ['**/*.spec.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(\\.{1,2}/)+(.*/)?apps/',
              message: 'Apps import libs, never each other.',
            },
            {
              regex: '^@mmlab/testing',
              message: 'Test helpers only in tests: the native runner is @mmlab/runner.',
            },
          ],
        },
      ],
    },
  },
  {
    // the live dashboard runs in the browser (its own tsconfig has the DOM library)
    files: ['apps/dashboard/**'],
    languageOptions: { globals: { ...globals.browser } },
  },
  // build scripts in plain JavaScript (scripts/*.mjs): the rules that need no types
  { files: ['scripts/**/*.mjs'], ...tseslint.configs.disableTypeChecked },
);
