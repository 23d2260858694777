package httpapi

import (
	_ "embed"

	"github.com/gofiber/fiber/v2"
)

// openAPIDocument is the OpenAPI 3.1 description of this API, served at GET
// /openapi.json. It is written by hand next to docs/API.md and kept true by
// the tests: every answer the end-to-end tests receive is validated against
// it, and its error-type enum must equal executor.ErrorTypes.
//
//go:embed openapi.json
var openAPIDocument []byte

// OpenAPIDocument returns a copy of the OpenAPI document.
func OpenAPIDocument() []byte {
	return append([]byte(nil), openAPIDocument...)
}

func (s *Server) handleOpenAPI(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(openAPIDocument)
}
