// The API reference, from this server's own OpenAPI document; a file, not inline, so the CSP holds.
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
