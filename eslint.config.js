// Lint and format rules for the whole tree (src, test, bench, demo, scripts), run by `npm test` as `npm run lint`.
// Style: two spaces, single quotes, no semicolons, a space before a declaration's parentheses: what the code has
// been written in from the start, and what js-libp2p (standard style) uses. `npm run lint:fix` formats.
import js from '@eslint/js'
import stylistic from '@stylistic/eslint-plugin'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', '.tools/**', 'scratch/**', 'test/go/**', 'chart/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  stylistic.configs.customize({
    indent: 2,
    quotes: 'single',
    semi: false,
    jsx: false,
    braceStyle: '1tbs',
    commaDangle: 'always-multiline',
    arrowParens: true,
  }),
  // A short list may stay on one line while a long one breaks after each item.
  { rules: { '@stylistic/list-style': 'off' } },
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // Every promise is awaited or caught: an unhandled rejection must never end the daemon.
      '@typescript-eslint/no-floating-promises': ['error', {
        allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite'] }],
      }],
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false, attributes: false } }],
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'separate-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@stylistic/space-before-function-paren': ['error', { anonymous: 'always', named: 'always', asyncArrow: 'always' }],
      // Layout choices the code makes on purpose: a guard clause on one line, a short list kept on one line.
      '@stylistic/max-statements-per-line': 'off',
      '@stylistic/operator-linebreak': ['error', 'after', { overrides: { '?': 'before', ':': 'before', '|': 'before', '&': 'before' } }],
      'no-empty': ['error', { allowEmptyCatch: true }],
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      '@stylistic/quotes': ['error', 'single', { avoidEscape: true, allowTemplateLiterals: 'avoidEscape' }],
      '@stylistic/quote-props': ['error', 'as-needed'],
      '@stylistic/generator-star-spacing': ['error', { before: true, after: true, method: { before: true, after: true } }],
      '@stylistic/yield-star-spacing': ['error', 'both'],
      // One naming style in every folder: camelCase values (constants too), PascalCase types and classes.
      '@typescript-eslint/naming-convention': [
        'error',
        { selector: 'variable', format: ['camelCase', 'PascalCase'], leadingUnderscore: 'allow' },
        { selector: 'function', format: ['camelCase', 'PascalCase'] },
        { selector: 'typeLike', format: ['PascalCase'] },
      ],
    },
  },
  {
    // Tests walk parsed YAML, TOML and JSON documents (rendered charts, Talos patches, dashboards) by path.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    // The logger type is src/log's Logger; pino stays behind createLogger.
    files: ['src/**/*.ts'],
    ignores: ['src/log/**'],
    rules: { 'no-restricted-imports': ['error', { paths: [{ name: 'pino', message: 'import the Logger type from src/log/index.ts' }] }] },
  },
)
